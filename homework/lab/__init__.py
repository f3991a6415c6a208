"""The lecture lab: analyses of a homework's model in the course's words, each optional. The methodology
advisor (advisor.py), critical points (critical.py), optimizers/schedules/batch sizes compared (compare.py),
Lightning's learning-rate and batch-size finders (finders.py). They ask a homework through hooks
(`reference_data()`, `batch_loss()`, remedies) and never name one."""

"""The lecture lab: analyses of a homework's model in the course's words, each optional. The methodology
advisor (advisor.py; its simple reference model in reference.py, its comparison of model sizes in model_sizes.py),
critical points (critical.py), optimizers/schedules/batch sizes compared (compare.py), Lightning's learning-rate
and batch-size finders (finders.py). They ask a homework through hooks (`reference_data()`, `reference_score()`,
`batch_loss()`, remedies, the task's `monitor`/`mode`) and never name one."""

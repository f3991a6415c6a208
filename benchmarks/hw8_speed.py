"""HW8: the course sample's plain-PyTorch loop vs `hw8.py fit` + `predict` with the sample recipe, side by side.

Both train the sample's `conv_autoencoder` (or --net fcn / vae) with Adam lr 1e-3 and the sample's batch size on the
same generated face set (datamodules/faces_demo.py, in the course's layout, written to a temp folder), then score
the test set. The plain loop is the sample's code: `torch.from_numpy(train)` (the whole set in memory), its
CustomTensorDataset, RandomSampler and DataLoader, and at test time `torch.tensor(test, dtype=torch.float32)`
(a float copy of the whole test set). The framework reads memory-mapped uint8 and converts each batch; it also
validates every epoch on its built validation set (held-out faces and generated anomalies) and keeps the best
checkpoint by that ROC AUC. Each side runs in its own process, one torch thread, one after the other.

    python benchmarks/hw8_speed.py [--images 6000] [--test-images 1000] [--epochs 5] [--net cnn] [--batch-size 2000]

Prints each side's wall time (whole process: imports included), peak memory (max RSS), training images per
second (the plain loop's own timer, without imports; the framework's whole `fit` process, imports, validation and
checkpoints included), the framework/plain ratios, and both test ROC AUCs against the generated set's answer key.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the course sample's training and inference code (ML2022/ML2023 HW8), trimmed of its progress bar and its
#: torch.save calls, with the answer key read at the end
PLAIN = r'''
import sys, time
import numpy as np, pandas as pd, torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, TensorDataset
import torchvision.transforms as transforms
from sklearn.metrics import roc_auc_score
from models.autoencoders import ConvAutoencoder, FCNAutoencoder, VAE, vae_loss

data, model_type, num_epochs, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(1)
start = time.perf_counter()
train = np.load(f"{data}/trainingset.npy", allow_pickle=True)
test = np.load(f"{data}/testingset.npy", allow_pickle=True)

class CustomTensorDataset(TensorDataset):
    def __init__(self, tensors):
        self.tensors = tensors
        if tensors.shape[-1] == 3:
            self.tensors = tensors.permute(0, 3, 1, 2)
        self.transform = transforms.Compose([transforms.Lambda(lambda x: x.to(torch.float32)),
                                             transforms.Lambda(lambda x: 2. * x / 255. - 1.)])
    def __getitem__(self, index):
        return self.transform(self.tensors[index])
    def __len__(self):
        return len(self.tensors)

torch.manual_seed(48763)
x = torch.from_numpy(train)
train_dataset = CustomTensorDataset(x)
train_dataloader = DataLoader(train_dataset, sampler=RandomSampler(train_dataset), batch_size=batch_size)
model = {"fcn": FCNAutoencoder, "cnn": ConvAutoencoder, "vae": VAE}[model_type]()
criterion = nn.MSELoss()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
model.train()
for epoch in range(num_epochs):
    for data_ in train_dataloader:
        img = data_.float()
        output = model(img)
        loss = vae_loss(output[0], img, output[1], output[2]) if model_type == "vae" else criterion(output, img)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
trained = time.perf_counter()

test_dataset = CustomTensorDataset(torch.tensor(test, dtype=torch.float32))
test_dataloader = DataLoader(test_dataset, sampler=SequentialSampler(test_dataset), batch_size=200)
eval_loss = nn.MSELoss(reduction="none")
model.eval()
anomality = []
with torch.no_grad():
    for data_ in test_dataloader:
        img = data_.float()
        output = model(img)
        output = output[0] if model_type == "vae" else output
        anomality.append(eval_loss(output, img).sum([1, 2, 3]))
anomality = torch.sqrt(torch.cat(anomality)).numpy()
pd.DataFrame(anomality, columns=["score"]).to_csv("prediction.csv", index_label="ID")
labels = np.load(f"{data}/demo_test_labels.npy")
print(f"train_s={trained - start:.2f} predict_s={time.perf_counter() - trained:.2f} "
      f"auroc={roc_auc_score(labels, anomality):.4f}")
'''


def run(args: list[str], cwd: Path) -> tuple[float, float, str]:
    """A child process's (wall seconds, peak RSS in MiB, stdout)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NTU_ML_HOME": str(cwd), "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    with open(cwd / "out.txt", "w") as out:
        child = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall, text = time.perf_counter() - start, (cwd / "out.txt").read_text()
    if status != 0:
        sys.exit(f"{' '.join(args[:3])} failed:\n{text[-3000:]}")
    return wall, usage.ru_maxrss / 1024, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6000, help="training images to generate")
    parser.add_argument("--test-images", type=int, default=1000, help="test images to generate (half anomalies)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--net", choices=("fcn", "cnn", "vae"), default="cnn")
    parser.add_argument("--batch-size", type=int, default=2000, help="the sample's 2000")
    options = parser.parse_args()

    from numpy import load
    from sklearn.metrics import roc_auc_score

    from datamodules.faces_demo import LABELS_FILE, write_demo_faces

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        write_demo_faces(data, options.images, options.test_images)
        (tmp / "plain").mkdir()
        (tmp / "framework").mkdir()
        plain_wall, plain_rss, text = run(["-c", PLAIN, str(data), options.net, str(options.epochs),
                                           str(options.batch_size)], tmp / "plain")
        found = dict(item.split("=") for item in text.split() if "=" in item)
        common = ["--data.data_dir", str(data), "--torch_num_threads", "1", "--diagnose", "false",
                  "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
        fit_wall, fit_rss, _ = run([str(ROOT / "homework" / "hw8.py"), "fit", "--config",
                                    str(ROOT / "homework" / "configs" / "hw8_sample.yaml"), "--model.net", options.net,
                                    "--trainer.max_epochs", str(options.epochs), "--data.batch_size",
                                    str(options.batch_size), *common], tmp / "framework")
        predict_wall, predict_rss, _ = run([str(ROOT / "homework" / "hw8.py"), "predict", "--ckpt_path", "best",
                                            *common], tmp / "framework")
        (prediction,) = (tmp / "framework" / "runs" / "hw8").glob("*/prediction.csv")
        import pandas as pd

        labels = load(data / LABELS_FILE)
        framework_auroc = roc_auc_score(labels, pd.read_csv(prediction)["score"])
    trained = options.images * options.epochs
    print(f"{options.images} training and {options.test_images} test images, net {options.net}, "
          f"{options.epochs} epochs of batch {options.batch_size}, one torch thread")
    print(f"{'':34}{'plain (sample)':>16}{'framework':>14}{'ratio':>8}")
    print(f"{'fit + predict wall (s)':34}{plain_wall:16.1f}{fit_wall + predict_wall:14.1f}"
          f"{(fit_wall + predict_wall) / plain_wall:7.2f}x")
    plain_train = float(found["train_s"])  # its loading and training loop, not its imports
    print(f"{'training images/s':34}{trained / plain_train:16.0f}{0.9 * trained / fit_wall:14.0f}"
          f"{0.9 * plain_train / fit_wall:7.2f}x")
    print(f"{'peak memory (MiB)':34}{plain_rss:16.0f}{max(fit_rss, predict_rss):14.0f}"
          f"{max(fit_rss, predict_rss) / plain_rss:7.2f}x")
    print(f"{'test ROC AUC (answer key)':34}{float(found['auroc']):16.4f}{framework_auroc:14.4f}")
    print("(the framework trains on 90% of the images, validates on the rest plus as many generated anomalies "
          "every epoch, and predicts with the best epoch's model; the sample with its last)")


if __name__ == "__main__":
    main()

"""The released VICReg code's input pipeline, timed as it runs; figures as JSON on stdout.

    .venv-released/bin/python benchmarks/released_pipeline.py FOLDER [--images 2048]
        [--batch-size 32] [--workers 2] [--stage-sample 128]

Runs in `.venv-released` (`benchmarks/released_pipeline_setup.sh`: torch, torchvision, Pillow,
NumPy), not in the package's environment: torchvision is no dependency of keras_vicreg.
`benchmarks/input_pipeline.py` launches it beside keras_vicreg's own pipeline on the same folder.

The pipeline is the released pretraining's: torchvision's `ImageFolder` on the folder (PIL decodes
each image whole, converted to RGB), the two asymmetric views of the released `TrainTransform`
written here from the method's facts (docs: /work/shared/VICREG_REFERENCE.md's augmentation
table), and a `DataLoader` with `--workers` worker processes that collates the batches. Per view:
RandomResizedCrop(224, scale (0.08, 1), bicubic), horizontal flip p 0.5, ColorJitter(0.4, 0.4,
0.2, 0.1) with p 0.8, grayscale p 0.2, Gaussian blur (PIL's filter, sigma uniform in [0.1, 2])
with p 1.0 / 0.1, solarization (PIL's, pixels >= 128 inverted) with p 0.0 / 0.2, ToTensor,
Normalize with ImageNet's mean and std.

Deviations from the released run, for timing: the sampler draws `--images` (plus a warm-up batch)
indices as successive shuffled passes over the folder in one `DataLoader` iteration, where the
released code starts a fresh iterator (and fresh workers) every epoch of ImageNet; memory is not
pinned (no GPU).

Figures: two-view images per second after the first (warm-up) batch, and the CPU time per image of
this process (all threads) plus its workers (read from /proc while they run, up to the last batch
but one, and divided by the images made by then). Per stage, CPU ms per image measured inside
`--workers` worker processes on a sample of the images: read+decode (ImageFolder's loader),
crop+resize (RandomResizedCrop), photometric (flip, jitter, grayscale, blur, solarization, ToTensor,
Normalize), and batching (`default_collate` of a batch of both views, in the worker as the
DataLoader does). Handing the batches to the main process is not in the stages;
`main_cpu_ms_per_image` is this process's share of the whole run's CPU time, mostly that hand-over.
"""

import argparse
import json
import os
import random
import time

import torch
import torchvision
from PIL import ImageFilter
from PIL import ImageOps
from torch.utils import data as torch_data
from torchvision import datasets
from torchvision import transforms

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class PILGaussianBlur:
    """With probability p, PIL's Gaussian blur with sigma uniform in [0.1, 2.0], as released."""

    def __init__(self, p):
        self.p = p

    def __call__(self, image):
        if random.random() < self.p:
            return image.filter(ImageFilter.GaussianBlur(random.uniform(0.1, 2.0)))
        return image


class PILSolarization:
    """With probability p, PIL's solarization (pixels >= 128 inverted), as released."""

    def __init__(self, p):
        self.p = p

    def __call__(self, image):
        return ImageOps.solarize(image) if random.random() < self.p else image


def view_stages(blur_prob, solarize_prob):
    """One view's transforms in stages: (crop+resize, photometric)."""
    crop = transforms.RandomResizedCrop(
        224, scale=(0.08, 1.0), interpolation=transforms.InterpolationMode.BICUBIC
    )
    photometric = transforms.Compose(
        [
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
            PILGaussianBlur(blur_prob),
            PILSolarization(solarize_prob),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    return crop, photometric


VIEW_STAGES = (view_stages(1.0, 0.0), view_stages(0.1, 0.2))


class TrainTransform:
    """The released two-view transform: (view 1, view 2) of one PIL image."""

    def __init__(self):
        self.views = [transforms.Compose(list(stages)) for stages in VIEW_STAGES]

    def __call__(self, image):
        return self.views[0](image), self.views[1](image)


class StageTimes(torch_data.Dataset):
    """Each item: the CPU seconds of each stage for one image (both views), in its worker."""

    def __init__(self, folder):
        self.images = datasets.ImageFolder(folder)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        path, _ = self.images.samples[index]
        start = time.process_time()
        image = self.images.loader(path)
        decoded = time.process_time()
        crops = [crop(image) for crop, _ in VIEW_STAGES]
        cropped = time.process_time()
        views = [photometric(c) for c, (_, photometric) in zip(crops, VIEW_STAGES)]
        done = time.process_time()
        return (views[0], views[1]), (decoded - start, cropped - decoded, done - cropped)


def _collate_timed(batch):
    start = time.process_time()
    torch_data.default_collate([(views, 0) for views, _ in batch])
    collate = time.process_time() - start
    return [times for _, times in batch], collate, len(batch)


def stage_times(folder, sample, batch_size, workers):
    """Per stage, CPU ms per image over `sample` images in `workers` worker processes."""
    dataset = StageTimes(folder)
    indices = list(range(min(sample, len(dataset))))
    loader = torch_data.DataLoader(
        torch_data.Subset(dataset, indices),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate_timed,
    )
    totals, collate, count = [0.0, 0.0, 0.0], 0.0, 0
    for times, batch_collate, size in loader:
        for item in times:
            totals = [t + s for t, s in zip(totals, item)]
        collate, count = collate + batch_collate, count + size
    names = ("read_decode", "crop_resize", "photometric")
    stages = {name: 1000 * total / count for name, total in zip(names, totals)}
    stages["batching"] = 1000 * collate / count
    stages["sample"] = count
    return stages


def _worker_cpu(pid):
    """User + system CPU seconds of a running process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(folder, images, batch_size, workers):
    """(two-view images per second, CPU ms per image, this process's CPU ms per image)."""
    dataset = datasets.ImageFolder(folder, TrainTransform())
    sampler = torch_data.RandomSampler(dataset, num_samples=images + batch_size)
    loader = torch_data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, sampler=sampler, drop_last=True
    )
    iterator = iter(loader)
    next(iterator)  # warm-up: the workers start
    pids = [w.pid for w in getattr(iterator, "_workers", [])]
    start, main_start = time.perf_counter(), time.process_time()
    workers_start = sum(_worker_cpu(pid) for pid in pids)
    done, workers_cpu, workers_done = 0, 0.0, 1
    for (view_a, _), _ in iterator:
        done += view_a.shape[0]
        # Read while the workers run: they exit when the last batch has been handed over.
        if done < images:
            workers_cpu = sum(_worker_cpu(pid) for pid in pids) - workers_start
            workers_done = done
    elapsed = time.perf_counter() - start
    main = time.process_time() - main_start
    del iterator
    cpu = 1000 * (main / done + workers_cpu / workers_done)
    return done / elapsed, cpu, 1000 * main / done


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--images", type=int, default=2048, help="two-view images timed (0: none)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--stage-sample", type=int, default=0, help="0: no per-stage timing")
    args = parser.parse_args()
    result = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    if args.images:
        rate, cpu, main_cpu = throughput(args.folder, args.images, args.batch_size, args.workers)
        result.update(images_per_s=rate, cpu_ms_per_image=cpu, main_cpu_ms_per_image=main_cpu)
    if args.stage_sample:
        result["stages"] = stage_times(
            args.folder, args.stage_sample, args.batch_size, args.workers
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Image-text VICReg trained and scored from a config: the paper's MS-COCO retrieval experiment.

`trainers/retrieval.py` parses its flags and calls `run_retrieval`: the config is validated
(`keras_vicreg.config.retrieval`) before any data is read; the captioned splits are read
(`keras_vicreg.data.coco_captions`), the word tokenizer adapted on the training captions, the
two branches built (the package's ResNet for images, `models.text_branch.text_encoder` for
captions, each with its own expander: `VICReg(image, spec, backbone_b=text)`) and trained with
Adam on pairs of an image and one of its captions drawn at random each epoch; the test images
and all their captions are embedded (each side centred by its mean over training pairs, see
`centred_embeddings`) and scored by `caption_retrieval_recall` in the "5k" and "1k" protocols.

Deviations from the paper (which trains within VSE++'s code): the VICReg loss replaces VSE++'s
hinge loss with hard negatives and VSE++'s 1,024-wide linear projections become VICReg expanders;
no ImageNet-pretrained ResNet-152 is built in (give one with `image_backbone`), the whole image
branch trains from the first step (VSE++ freezes the ResNet first and fine-tunes it later), and
each side is centred before scoring (VSE++ scores its normalised embeddings as they are).

With a workdir the training resumes: the weights and Adam's state are checkpointed every
`checkpoint_every_steps` steps, at each epoch end and on SIGTERM or SIGINT (which then raises
`preemption.Preempted`), and a rerun in the same workdir restores the newest checkpoint that loads
and goes on from its step (`training.checkpointing`, as pretraining does). Epoch `e`'s pairs come
from a seed of (`seed`, `e`), so a resumed epoch reads the batches the interrupted one would have.
"""

import contextlib
import json
import os

import keras

from keras_vicreg.config import retrieval as retrieval_config
from keras_vicreg.data import coco_captions
from keras_vicreg.evaluation.retrieval import caption_retrieval_recall
from keras_vicreg.models.backbones.resnet_backbone import resnet
from keras_vicreg.models.text_branch import text_encoder
from keras_vicreg.models.vicreg import VICReg
from keras_vicreg.training import checkpointing
from keras_vicreg.training import durable_files
from keras_vicreg.training import preemption
from keras_vicreg.training.pretraining_data import epoch_seed

DIRECTIONS = ("image_to_text", "text_to_image")


def captioned_splits(config, data_dir=None, decode_images=True):
    """(train, test) datasets of {"image", "captions"} elements for the config's dataset.

    `decode_images=False` leaves COCO's images encoded, for passes over the captions only.
    """
    if config.dataset == "canvases":
        common = dict(canvas_size=config.canvases.size, max_items=config.canvases.max_items)
        train, _ = coco_captions.canvas_split(config.canvases.train, split="train",
                                              seed=config.seed, **common)
        test, _ = coco_captions.canvas_split(config.canvases.test, split="test",
                                             seed=config.seed + 1, **common)
        return train, test
    return tuple(coco_captions.coco_split(config[key], data_dir=data_dir,
                                          captions_per_image=config.captions_per_image,
                                          decode_images=decode_images)
                 for key in ("train_split", "test_split"))


def build_model(config, vocabulary_size):
    """The two-branch `VICReg`, compiled with Adam: a ResNet on images, a GRU on token ids."""
    channels = len(config.mean)
    if config.image_backbone:
        from keras_vicreg.evaluation.runs import load_backbone

        image = load_backbone(config.image_backbone, image_size=config.image_size,
                              depth=config.image_depth, stem=config.image_stem)
    else:
        image = resnet(config.image_depth, stem=config.image_stem,
                       filters=tuple(config.image_filters),
                       input_shape=(config.image_size, config.image_size, channels),
                       name="image_encoder")
    text = text_encoder(vocabulary_size, config.max_length, **config.text)
    model = VICReg(image, config.expander, backbone_b=text, **config.loss)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    model.build(((None, config.image_size, config.image_size, channels),
                 (None, config.max_length)))  # its variables exist before a checkpoint loads
    return model


def learning_rate_schedule(config):
    """VSE++'s step schedule as a callback: the rate times `lr_decay_factor` every
    `lr_decay_epochs` epochs."""
    def rate(epoch, _):
        return config.learning_rate * config.lr_decay_factor ** (epoch // config.lr_decay_epochs)

    return keras.callbacks.LearningRateScheduler(rate)


def steps_per_epoch(config, train_captions):
    """Full batches per epoch: the training images // batch_size.

    `train_captions` is the training split with its images left encoded: where its length is
    unknown (COCO's, after dropping images with too few captions) it is counted, a pass as cheap
    as the tokenizer's.
    """
    images = int(train_captions.cardinality())
    if images < 0:
        images = int(train_captions.reduce(0, lambda count, _: count + 1))
    steps = images // config.batch_size
    if steps < 1:
        raise ValueError(
            f"The training split has {images} images, fewer than one batch: lower "
            f"config.batch_size or use more images. Received: batch_size={config.batch_size}")
    return steps


def train_model(config, model, train, tokenizer, steps, workdir=None, callbacks=()):
    """Trains `model` for `config.epochs` of `steps`, resuming from `<workdir>/checkpoints`.

    Without a workdir nothing is checkpointed and SIGTERM and SIGINT keep their usual effect.
    `callbacks` are more `fit` callbacks (TensorBoard, ...), run before the checkpoint's.

    Returns:
        {"loss": each epoch's training loss (from the resumed epoch on), "start_step": the step
        restored (0 for a fresh run)}.
    """
    def epoch_pairs(epoch, skip):
        return coco_captions.training_pairs(
            train, tokenizer, config.batch_size, image_size=config.image_size, mean=config.mean,
            std=config.std, augment=config.augment, crop_fraction=config.crop_fraction,
            seed=epoch_seed(config.seed, epoch), shuffle_buffer=config.shuffle_buffer,
        ).skip(skip)

    history = keras.callbacks.History()  # kept across resumable_fit's fits, unlike fit's own
    callbacks = [learning_rate_schedule(config), history, *callbacks]
    with preemption.PreemptionSignal() if workdir else contextlib.nullcontext() as stop:
        start = 0
        if workdir:
            directory = os.path.join(workdir, "checkpoints")
            start = checkpointing.restore_latest(model, directory)
            callbacks.append(checkpointing.StepCheckpoint(
                directory, config.checkpoint_every_steps, initial_step=start, stop_signal=stop))
        checkpointing.resumable_fit(model, epoch_pairs, epochs=config.epochs,
                                    steps_per_epoch=steps, initial_step=start,
                                    callbacks=callbacks, verbose=config.verbose)
    return {"loss": [float(value) for value in history.history.get("loss", [])],
            "start_step": start}


class TestSet:
    """The test images with their captions as token ids, and the training pairs for centring."""

    def __init__(self, config, tokenizer, train, test):
        self.config = config
        self.test = test
        captions, self.caption_image = coco_captions.all_captions(test)
        self.tokens = coco_captions.tokenize(tokenizer, captions)
        self.num_images = int(self.caption_image.max()) + 1
        if "1k" in config.protocols and self.num_images % config.fold_images:
            raise ValueError(
                "protocol '1k' needs a number of test images that is a multiple of "
                f"config.fold_images: change the split or fold_images, or drop '1k' from "
                f"config.protocols. Received: {self.num_images} test images, "
                f"fold_images={config.fold_images}")
        self.centring = None
        if config.centering_size:
            sample = train.take(config.centering_size)
            sample_captions, _ = coco_captions.all_captions(sample)
            self.centring = (sample, coco_captions.tokenize(tokenizer, sample_captions))

    def _images(self, captioned):
        c = self.config
        return coco_captions.evaluation_images(
            captioned, c.eval_batch_size, image_size=c.image_size, mean=c.mean, std=c.std,
            crop_fraction=c.crop_fraction)

    def centred_embeddings(self, model):
        """(image embeddings, caption embeddings) of the test set, each side centred.

        VICReg leaves the embeddings' mean free, and a mean larger than their spread swamps cosine
        similarity; each side is centred with its mean over `centering_size` training images and
        their captions, never over the test set (as `examples/crossmodal` does; VSE++ scores its
        normalised embeddings as they are).
        """
        image_model = model.branch_model("a", embeddings=True)
        text_model = model.branch_model("b", embeddings=True)

        def embed(images, tokens):
            return (image_model.predict(self._images(images), verbose=0),
                    text_model.predict(tokens, batch_size=self.config.eval_batch_size, verbose=0))

        images, captions = embed(self.test, self.tokens)
        if self.centring is not None:
            mean_images, mean_captions = embed(*self.centring)
            images = images - mean_images.mean(axis=0)
            captions = captions - mean_captions.mean(axis=0)
        return images, captions

    def recall(self, model):
        """{protocol: {direction: {"r1": ...}}} and the headline protocol's at the top."""
        images, captions = self.centred_embeddings(model)
        ks = tuple(self.config.ks)
        record = {}
        for protocol in self.config.protocols:
            scores = caption_retrieval_recall(images, captions, self.caption_image, ks=ks,
                                              protocol=protocol,
                                              fold_images=self.config.fold_images)
            record[protocol] = {direction: {f"r{k}": scores[direction][k] for k in ks}
                                for direction in DIRECTIONS}
        record.update(record[self.config.headline])
        return record

    def chance(self):
        """Recall@K of random embeddings, about K / (images scored at once), per protocol."""
        sizes = {"5k": self.num_images, "1k": self.config.fold_images}
        return {protocol: {f"r{k}": min(1.0, k / sizes[protocol]) for k in self.config.ks}
                for protocol in self.config.protocols}


def run_retrieval(config, workdir=None, data_dir=None, callbacks=()):
    """Trains image-text VICReg and writes `<workdir>/results.json`; returns what it wrote.

    Args:
        config: a retrieval config (`keras_vicreg.config.retrieval.default_config`).
        workdir: where results.json, vocabulary.txt and the two branches (image_branch.keras,
            text_branch.keras: inputs to embeddings) go; None writes nothing.
        data_dir: tensorflow-datasets' data directory.
        callbacks: more `fit` callbacks for the training (TensorBoard, ...).

    Returns:
        The record: recall@K per protocol and direction ("5k", "1k", and the headline protocol's
        "image_to_text" and "text_to_image" at the top), "chance", "untrained" (with
        `evaluate_untrained`), "test_images", "vocabulary_size", "loss" (per epoch trained by this
        process: a resumed run's from the epoch it resumed in), "start_step" (0, or the step a
        resumed run restored), "backend".

    Raises:
        preemption.Preempted: SIGTERM or SIGINT arrived (with a workdir); the step is checkpointed.
    """
    retrieval_config.validate(config)
    keras.utils.set_random_seed(config.seed)
    train, test = captioned_splits(config, data_dir)
    train_captions, _ = captioned_splits(config, data_dir, decode_images=False)
    steps = steps_per_epoch(config, train_captions)
    tokenizer = coco_captions.adapt_tokenizer(
        coco_captions.caption_tokenizer(config.vocabulary_size, config.max_length), train_captions)
    test_set = TestSet(config, tokenizer, train, test)
    model = build_model(config, tokenizer.vocabulary_size())
    record = {"backend": keras.backend.backend(), "test_images": test_set.num_images,
              "fold_images": config.fold_images, "vocabulary_size": tokenizer.vocabulary_size(),
              "headline": config.headline, "chance": test_set.chance(),
              "config": json.loads(config.to_json_best_effort())}
    if config.evaluate_untrained:
        record["untrained"] = test_set.recall(model)
    record.update(train_model(config, model, train, tokenizer, steps, workdir, callbacks))
    record.update(test_set.recall(model))
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "vocabulary.txt"), "w", encoding="utf-8") as file:
            file.write("\n".join(tokenizer.get_vocabulary()[2:]) + "\n")
        model.branch_model("a", embeddings=True).save(os.path.join(workdir, "image_branch.keras"))
        model.branch_model("b", embeddings=True).save(os.path.join(workdir, "text_branch.keras"))
        durable_files.write_results_json(workdir, record)
    return record

"""A run's preparation: its folder's record, the scan (or the saved split), the model on its device,
the caches, the search for the settings left on 'auto', the datasets and the optimiser; and, on resume,
the state it continues from."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from dtl_engine.config import TrainConfig
from dtl_engine.data import ScanCancelled, Split, make_split
from dtl_engine.data.file_stamps import check_split_files
from dtl_engine.data.image_cache import default_image_cache
from dtl_engine.data.loader import auto_num_workers, image_dataset, start_worker_server
from dtl_engine.data.scan_check import scan_or_reuse
from dtl_engine.devices import resolve_precision, select_device
from dtl_engine.errors import RunError
from dtl_engine.listener import RunStarted
from dtl_engine.model.half_weights import cast_frozen_weights
from dtl_engine.recipes import lr_candidates
from dtl_engine.runs import checkpoint as ckpt
from dtl_engine.runs import listing as run_files
from dtl_engine.runs.folder import now_iso
from dtl_engine.training.autotune import AutoTuner, SearchResult, SearchStopped
from dtl_engine.training.feature_cache import FeatureCache
from dtl_engine.training.feature_store import FeatureStore, model_identity, store_fits
from dtl_engine.training.kept_weights import KeptWeights
from dtl_engine.training.memory import MemoryMeter


def steps_per_epoch(num_train: int, batch_size: int, drop_last: bool = False) -> int:
    """Updates per epoch (at least one: a split smaller than a batch still trains)."""
    if drop_last:
        return max(1, num_train // batch_size)
    return math.ceil(num_train / batch_size)


def _expected_cache_bytes(dataset: Any) -> int:
    """A guess of the cache space ``dataset`` needs (a 4:3 photo per sample at the stored short side)."""
    side = dataset.min_side or 0
    return len(dataset) * 3 * side * (side * 4 // 3)


class RunSetup(KeptWeights):
    """The preparation of one run (see :mod:`dtl_engine.training.run_state`)."""

    def _prepare(self, resume: bool, model_kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
        """Everything before the first step; returns the resume state (None: start at epoch 0)."""
        cfg, ddp = self.config, self.ddp
        self.resuming = resume
        if auto_num_workers(cfg.num_workers) > 0:
            start_worker_server()               # its imports overlap the scan and the model's build
        ddp.check_batch(cfg.batch_size)
        if resume:
            model_kwargs = ddp.share(lambda: self.folder.read_run().get("model_kwargs"))
        if self.writes:     # the saved settings also record the number of processes and the per-process batch
            saved = self.folder.read_config() if resume else cfg.to_dict()
            self.folder.write_config({**saved, **ddp.describe(cfg.batch_size)})
            self.folder.update_run(status="running", started=now_iso(), error=None, model_kwargs=model_kwargs)
        self.device, self.device_name = select_device(cfg.device)
        self.precision = resolve_precision(cfg.precision, self.device)
        state = self._split_and_model(resume, model_kwargs)
        self._model_on_device()
        self.cache = self._make_cache()
        self._store_pending = self._features_from_store(model_kwargs)
        if cfg.lr == "auto" or cfg.augment == "auto":
            self.config = self._search()
        self._datasets_and_optimiser()
        return state

    def _split_and_model(self, resume: bool, model_kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
        """The classes, split and model: saved ones on resume, else from a scan (recorded in the folder)."""
        cfg, folder, ddp = self.config, self.folder, self.ddp
        if resume and ddp.share(folder.has_spec):
            classes, split, state, spec = ddp.share(self._read_saved_run)   # rank 0 reads, all ranks get it
            self.classes, self.split = classes, Split.from_dict(split)
            if self.writes:
                self._warn_changed_images()
            self.model = run_files.model_from_spec(spec, cfg.seed)
            return state

        def scan() -> tuple[list[str], Split, list[str]]:        # a new run, or one stopped while scanning
            found = scan_or_reuse(cfg.data_dir, self.scan, should_stop=lambda: self.token.stop_requested)
            split = make_split(found, cfg.val_fraction, cfg.seed)
            return list(found.classes), split, [*found.warnings, *split.warnings]
        self.classes, self.split, warnings = ddp.share(scan)    # rank 0 scans (or reuses), the others wait
        self.model = run_files.build_run_model(cfg, len(self.classes), model_kwargs)
        if self.writes:
            folder.write_classes(self.classes)
            folder.write_split(self.split.to_dict())
            folder.write_spec(self.model.spec.to_dict())
        for message in warnings:
            self.listener.warning(message)
        return None

    def _model_on_device(self) -> None:
        """Every rank starts from rank 0's weights, on its device; the step budget follows from the split."""
        cfg = self.config
        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.ddp.broadcast_parameters(self._trainable)
        if not self.split.train:
            raise RunError("There are no training images in this run's split.")
        if not self.split.val:
            self.listener.warning("There are no validation images: the best epoch is chosen by training accuracy.")
        model = self.model.to(self.device)
        if cfg.half_frozen_weights and self.precision.autocast:  # every forward below runs under autocast
            cast_frozen_weights(model, self.precision.autocast_dtype)
        self.meter = MemoryMeter(self.device)
        self.steps_per_epoch = steps_per_epoch(len(self.split.train), cfg.batch_size, cfg.drop_last)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)

    def _datasets_and_optimiser(self) -> None:
        cfg, model = self.config, self.model
        image_cache = default_image_cache()
        self.train_set = image_dataset(self.split.train, model.data_config, cfg.augment, train=True, cache=image_cache)
        self.val_set = image_dataset(self.split.val, model.data_config, "none", train=False, cache=image_cache)
        if image_cache is not None and self.writes:   # room for this run's images, least recently used go first
            image_cache.make_room(_expected_cache_bytes(self.train_set) + _expected_cache_bytes(self.val_set))
        assert not isinstance(cfg.lr, str)         # 'auto' was resolved by the search
        self._fresh_optimizer(cfg.lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.use_grad_scaler)

    def _warn_changed_images(self) -> None:
        """Say which of the run's training and validation images changed or went since the run was made: the
        resumed epochs train and validate on what is there now, which is not what the first epochs saw."""
        _, gone = check_split_files([*self.split.train, *self.split.val], self.folder.read_file_stamps())
        if gone:
            first = gone[0]
            more = f" and {len(gone) - 1} more" if len(gone) > 1 else ""
            self.listener.warning(f"{len(gone)} image(s) of this run changed or went since it was made: "
                                  f"'{first['path']}' ({first['reason']}){more}. The resumed epochs use the images "
                                  "as they are now.")

    def _read_saved_run(self) -> tuple[list[str], dict[str, Any], dict[str, Any] | None, dict[str, Any]]:
        """(classes, split, resume state or None, model spec) of the run being resumed."""
        folder = self.folder
        state = ckpt.load_state(self.run_dir) if folder.has_state() else None   # None: start again from 0
        return folder.read_classes(), folder.read_split(), state, folder.read_spec()

    def _search(self) -> TrainConfig:
        """Find the learning rate and / or augmentation left on 'auto'; record it; return the resolved config."""
        cfg = self.config
        tuner = AutoTuner(self.model, self.split.train, cfg, lr_candidates(cfg.recipe, cfg.method), self.total_steps,
                          self.steps_per_epoch, self.device, self._autocast, self.cache,
                          should_stop=lambda: self.token.stop_requested, on_failure=self._bad_file,
                          on_progress=self.listener.search_progress, val_images=len(self.split.val))
        try:
            record = self.ddp.share(lambda: tuner.run().to_dict())   # rank 0 searches, every rank uses its choice
        except SearchStopped:
            raise ScanCancelled() from None     # stopped before the first epoch: nothing to keep
        result = SearchResult.from_dict(record)
        self._start_head_from_probe(tuner.head_start)
        self.first_model_due = True
        resolved = replace(cfg, lr=result.lr, augment=result.augment)
        if self.writes:                         # resume reuses the choice
            self.folder.write_search(record)
            self.folder.write_config({**resolved.to_dict(), **self.ddp.describe(resolved.batch_size)})
        self.listener.search_finished(record)
        if self.cache is not None and not self._cache_wanted(resolved):
            self.cache.close()                  # augmentation chosen: the prefix changes every epoch
            self.cache = None
        return resolved

    def _start_head_from_probe(self, head: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """Start the run's classifier from the search's best probe (linear probing, then fine-tuning).

        The probe was trained on the very features the model computes at step 0 (the side network
        starts at zero), so it is a classifier the model already agrees with. A head near zero (the
        official std 0.02) passes almost no gradient back to the side network, which then sits at
        chance for the first hundreds of updates; from the probe it learns from the first one.
        """
        if head is not None:                    # rank 0 searched: its probe goes to every rank
            with torch.no_grad():
                self.model.head.weight.copy_(head[0])
                self.model.head.bias.copy_(head[1])
        self.ddp.broadcast_parameters(self.model.head.parameters())

    def _bad_file(self, path: str, reason: str) -> None:
        self.listener.warning(f"Left out an image that could not be loaded: {reason}")

    @staticmethod
    def _cache_wanted(cfg: TrainConfig) -> bool:
        # 'auto' augmentation: cache while searching; dropped again if an augmentation is chosen
        return cfg.cache_features == "on" or (cfg.cache_features == "auto" and cfg.augment in ("none", "auto"))

    def _make_cache(self) -> FeatureCache | None:
        cfg = self.config
        if not self._cache_wanted(cfg):
            return None
        if self.ddp.enabled:    # each process sees other images every epoch, so no process's cache would fill
            if cfg.cache_features == "on":
                self.listener.warning("The feature cache is off when training on several processes.")
            return None
        if cfg.drop_path > 0:
            if cfg.cache_features == "on":
                self.listener.warning("The feature cache is off because drop-path makes the frozen blocks "
                                      "random in training.")
            return None
        if cfg.augment not in ("none", "auto"):
            self.listener.warning("The feature cache is on with augmentation: later epochs reuse the first "
                                  "epoch's augmented images.")
        n = len(self.split.train) + len(self.split.val)     # val samples sit after the training samples
        return FeatureCache(n, cfg.cache_budget_mb * 2**20, self.run_dir)

    def _features_from_store(self, model_kwargs: dict[str, Any] | None) -> Any:
        """Fill the in-run feature cache from the cross-run store; returns what to store later, if anything."""
        if self.cache is None or not store_fits(self.config):
            return None
        store = FeatureStore(model_identity(self.config, model_kwargs, self.model.data_config))
        paths = [p for p, _ in self.split.train] + [p for p, _ in self.split.val]
        features = store.get_all(paths)
        if features is None:
            return store, paths                            # computed in epoch 1, stored after it
        dtype = self.precision.autocast_dtype if self.precision.autocast else torch.float32
        self.cache.store(torch.arange(len(paths)), {"features": features.to(dtype or torch.float32)})
        return None

    def _features_to_store(self) -> None:
        if self._store_pending is not None and self.cache is not None and self.cache.complete:
            store, paths = self._store_pending
            store.put_all(paths, self.cache.fetch(torch.arange(len(paths)))["features"])
            self._store_pending = None

    def _restore(self, state: dict[str, Any]) -> int:
        self.model.load_trainable_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.global_step = int(state["global_step"])
        self.metrics = list(state["metrics"])
        self.best_epoch, self.best_acc = state["best_epoch"], state["best_val_acc"]
        self.bad_epochs = int(state["bad_epochs"])
        self.parts = int(state.get("parts", 1))
        self.lr_scale, self.backoffs = float(state.get("lr_scale", 1.0)), int(state.get("backoffs", 0))
        self.lowest_loss = state.get("lowest_val_loss")
        return int(state["epoch"]) + 1

    def _started_info(self, start_epoch: int) -> RunStarted:
        trainable, total = self.model.parameter_counts()
        return RunStarted(
            run_dir=str(self.run_dir), device=self.device.type, device_name=self.device_name,
            precision=self.precision.name, epochs=self.config.epochs, steps_per_epoch=self.steps_per_epoch,
            start_epoch=start_epoch, classes=list(self.classes), num_train=len(self.split.train),
            num_val=len(self.split.val), trainable_params=trainable, total_params=total,
            config={**self.config.to_dict(), **self.ddp.describe(self.config.batch_size)})


"""The one configuration tree: TOML preset < environment (``ATESC_``, ``__``) < CLI ``--set``.

Every section forbids unknown keys. ``load_config`` turns any validation problem into a
``BadInput`` whose message names the source (file, env var or ``--set``) and the dotted field.
The resolved config is written to each run directory and embedded in every checkpoint.
"""

from __future__ import annotations

import contextvars
import math
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from core.errors import BadInput, require_file
from core.registry import plugin_names

ENV_PREFIX = "ATESC_"
ENV_DELIMITER = "__"

# The valid teacher kinds and DFKD methods are the modules of their plugin packages (listed, not
# imported: no torch here). A Literal keeps them choices for validation, the schema and the app's form.
TeacherKindName = Literal[tuple(plugin_names("core.teachers.kinds"))]  # type: ignore[valid-type]
DFKDMethodName = Literal[tuple(plugin_names("core.dfkd.methods"))]  # type: ignore[valid-type]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, NaN/Inf are rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="after")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class DataConfig(Section):
    id_domain: str = Field("mnist", description="In-distribution domain the teacher is trained to serve")
    ood_domain: str = Field("patched:mnist", description="Out-of-distribution domain the NTL teacher must fail on")
    root: Path = Field(Path("~/.cache/atesc-tui/data"), description="Directory for cached and local datasets")
    eval_samples: int = Field(1000, ge=10, description="Test images per domain used for each evaluation")


class TeacherConfig(Section):
    kind: TeacherKindName = Field(
        "ntl-target", description="Teacher kind (core/teachers/kinds/): sl is the supervised control, the others are non-transferable"
    )
    arch: str = Field("cnn", description="Teacher model name in the model registry (needs BatchNorm for DFQ)")
    width: int = Field(32, ge=4, le=1024, description="Base channel width of the teacher")
    path: Path | None = Field(
        None, description="safetensors teacher to load; when unset a teacher is trained and cached under data.root"
    )
    seed: int | None = Field(
        None, ge=0, le=2**31 - 1,
        description="Seed of teacher training; default run.seed. Pin it so runs with several student seeds share one teacher",
    )
    epochs: int = Field(8, ge=1, le=1000, description="Teacher training epochs")
    batch_size: int = Field(64, ge=2, le=4096, description="Teacher batch size (per domain for NTL)")
    lr: float = Field(3e-3, gt=0, le=10, description="Adam learning rate of the teacher")
    lr_decay: float = Field(0.996, gt=0, le=1, description="Multiplicative learning-rate decay per step (0.996: x0.14 after 8 MNIST epochs)")
    alpha: float = Field(0.1, ge=0, description="NTL weight on the OOD KL term (clamped at 1)")
    beta: float = Field(
        1.0, ge=0, description="NTL weight on the feature MMD term (clamped at 1); the reference 0.1 blocks too slowly here (bench/teachers.md)"
    )
    source_augs: list[Literal["patch", "color", "blur", "noise"]] = Field(
        default_factory=lambda: ["patch", "color"],
        description="ntl-source: augmentations that synthesise the OOD side from ID data",
    )
    shift: int = Field(2, ge=0, le=8, description="Random translation (pixels) of training images, both domains")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay (L2) of the teacher")


class StudentConfig(Section):
    arch: str = Field("cnn-student", description="Student model name in the model registry")
    width: int = Field(16, ge=4, le=1024, description="Base channel width of the student")
    lr: float = Field(1e-3, gt=0, le=10, description="Student learning rate (reference DFQ recipe: SGD 0.1)")
    optimizer: Literal["adam", "sgd"] = Field(
        "adam", description="Student optimizer: adam, or sgd with momentum and weight decay (the reference's)"
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd: momentum (reference 0.9)")
    weight_decay: float = Field(0.0, ge=0, description="Student weight decay (reference 1e-4 with sgd)")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="Student learning-rate schedule over the run: constant, or cosine decay to 0 (reference)"
    )


class GeneratorConfig(Section):
    arch: str = Field("dcgan", description="Generator model name in the model registry")
    width: int = Field(16, ge=4, le=1024, description="Base channel width of the generator")
    nz: int = Field(64, ge=2, le=4096, description="Latent dimension")
    lr: float = Field(1e-3, gt=0, le=10, description="Generator learning rate (Adam)")


class DFKDConfig(Section):
    method: DFKDMethodName = Field("dfq", description="Data-free KD method (core/dfkd/methods/): dfq (Choi et al. 2020), cmi (Fang et al. 2021)")
    iterations: int = Field(300, ge=1, le=10_000_000, description="Outer iterations (one generator update each)")
    batch_size: int = Field(64, ge=2, le=8192, description="Synthetic samples per batch")
    student_steps: int = Field(5, ge=1, le=100, description="Student updates per generated batch")
    temperature: float = Field(1.0, gt=0, description="KD temperature")
    w_bn: float = Field(1.0, ge=0, description="Weight of BN-statistics matching in the generator loss")
    w_oh: float = Field(1.0, ge=0, description="Weight of the one-hot cross-entropy in the generator loss")
    w_balance: float = Field(5.0, ge=0, description="Weight of the class-balance term in the generator loss")
    w_adv: float = Field(1.0, ge=0, description="Weight of the adversarial (student/teacher disagreement) term")
    fresh_batches: bool = Field(
        False,
        description="Draw a fresh generator batch for every student step (the reference DFQ loop) instead of reusing "
        "the one batch drawn after the generator update for all student steps",
    )
    pool_size: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="Replay pool: keep the last N synthetic samples (with their teacher logits) and train each "
        "student step on a batch drawn from the pool (CMI's ImagePool; 0 = off). Saved in checkpoints",
    )
    # CMI (dfkd.method = cmi), after Fast-Datafree's CMISynthesizer and scripts/cmi_cifar.sh. Each
    # description names the reference value; bench/results/cmi-reference.md says why ours differs.
    # BN and one-hot weights are w_bn / w_oh above (1.0 in the reference too); CMI has no balance
    # term; the generator, the latents and the projection head learn at generator.lr (reference 1e-3).
    cmi_g_steps: int = Field(
        20, ge=1, le=10_000,
        description="CMI: inversion steps per synthetic batch (reference 200; 20 here: one step costs about one DFQ "
        "generator step, so 200 is ~70 s per iteration on one CPU core; bench/results/cmi-reference.md)",
    )
    cmi_reset_generator: bool = Field(
        True, description="CMI: re-initialise the generator before every batch (reference: true, feature_reuse=False)"
    )
    cmi_targets: Literal["random", "balanced"] = Field(
        "random",
        description="CMI: classes the one-hot term pulls each sample toward: random (reference: uniform draws) or "
        "balanced (equal counts per class, leftover classes drawn at random)",
    )
    cmi_w_adv: float = Field(0.5, ge=0, description="CMI: weight of the decision-adversarial term (reference 0.5)")
    cmi_adv_agree_only: bool = Field(
        True,
        description="CMI: count the adversarial term only where student and teacher agree on the class "
        "(reference: true, decision-adversarial distillation)",
    )
    cmi_w_cr: float = Field(0.8, ge=0, description="CMI: weight of the contrastive term (reference 0.8)")
    cmi_cr_temperature: float = Field(0.2, gt=0, description="CMI: contrastive temperature (reference cr_T 0.2)")
    cmi_bank_size: int = Field(
        4096, ge=0, le=1_000_000,
        description="CMI: memory-bank rows (one per past synthetic sample: its local and global teacher features). "
        "Reference 40960; 4096 here keeps checkpoints small (one row is 2 x the teacher's BN channel count floats)",
    )
    cmi_n_neg: int = Field(
        256, ge=0, le=1_000_000,
        description="CMI: bank rows drawn as extra anchors per inversion step (reference 4096; 256 here: the head "
        "runs on every drawn row each step)",
    )
    cmi_head_dim: int = Field(256, ge=2, le=4096, description="CMI: projection head output size (reference 256)")
    cmi_local_scale_min: float = Field(
        0.25, gt=0, le=1, description="CMI: local view: smallest crop area as a share of the image (reference 0.25)"
    )
    cmi_global_pad: int = Field(4, ge=0, le=16, description="CMI: global view: random-crop padding in pixels (reference 4)")


class ATEscConfig(Section):
    enabled: bool = Field(True, description="Split synthetic samples by adversarial robustness (ATEsc)")
    eps: float = Field(0.03, ge=0, le=1, description="L-inf attack radius on [0,1] images")
    steps: int = Field(1, ge=1, le=100, description="PGD steps (1 = FGSM)")
    step_size: float | None = Field(None, gt=0, description="PGD step size; default 2.5 * eps / steps")
    score: Literal["flip", "shift", "margin", "rel-margin"] = Field(
        "margin",
        description="Robustness score: flip (top-1 changed), shift (KL clean||attacked), margin (logit-margin drop). "
        "Default margin: on real test images it separates the NTL teacher's ID from OOD with AUROC ~1.0 at eps 0.01-0.03 "
        "(shift 0.54-0.72, flip 0.2-0.27; bench/results/auroc.md); rel-margin: the drop divided by the clean margin",
    )
    split: Literal["quantile", "threshold", "adaptive", "feature"] = Field(
        "threshold",
        description="quantile: fixed fragile share; threshold: score >= threshold is fragile; adaptive: two-cluster split "
        "smoothed over steps. Default threshold: an absolute rule leaves an SL teacher's batches whole (every generated "
        "sample is fragile), while quantile/adaptive always send about half of them to forgetting (-20 points of SL "
        "student accuracy measured with adaptive); feature: 2-means on the teacher's penultimate features, the more "
        "fragile cluster is ID-like, used only when the clusters' robustness differs (atesc.gate)",
    )
    gate: float = Field(
        0.75, ge=0.5, le=1, description="feature split: minimum AUROC of the score between the two feature clusters; "
        "below it the batch stays whole (an SL teacher's clusters are classes, not ID vs OOD)",
    )
    fragile_share: float = Field(0.5, ge=0, le=1, description="quantile: share of each batch treated as fragile (ID-like)")
    threshold: float = Field(
        1.0,
        ge=0,
        description="threshold: score at or above which a sample is fragile (units of the score; the default 1.0 is "
        "for margin at eps 0.03: real ID images drop by 2-3.7 logits, the NTL teacher's real OOD images by 0-0.4)",
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="adaptive: smoothing of the split point across steps")
    forget: Literal["neg-kl", "uniform"] = Field(
        "uniform", description="Forgetting loss on robust (OOD-like) samples: neg-kl (push away from teacher, capped) or uniform"
    )
    forget_weight: float = Field(0.2, ge=0, description="Weight of the forgetting loss")
    forget_cap: float = Field(2.0, gt=0, description="neg-kl: cap on the KL the student is pushed to")
    steer_generator: bool = Field(False, description="Also steer the generator away from the robust region")
    steer_weight: float = Field(1.0, ge=0, description="Weight of the generator steering term")
    warmup: int = Field(0, ge=0, description="Iterations of plain DFKD before ATEsc engages")
    generator_split: bool = Field(
        False,
        description="Split-aware generator: the robust (OOD-like) generated samples go to a bank that completes the "
        "BN-statistics batch up to the teacher's ID/OOD mixing ratio (atesc.bn_mix), and the one-hot, balance and "
        "adversarial terms count fragile samples only; with an empty bank it is plain DFQ/CMI",
    )
    bn_mix: float = Field(
        0.5, ge=0, lt=1, description="generator_split: share of the teacher's BN statistics that came from its OOD "
        "side (target-specified NTL and CUTI train on half/half batches: 0.5)",
    )
    gate_momentum: float = Field(
        0.9, ge=0, lt=1, description="generator_split: smoothing of the trap evidence (share of recent generator batches "
        "that split); the BN completion is scaled by it, so an SL teacher's rare splits barely touch the generator",
    )
    bank_size: int = Field(512, ge=1, le=1_000_000, description="generator_split: robust samples kept in the bank")
    replay_fragile_only: bool = Field(
        True, description="With a replay pool (dfkd.pool_size), the student replays fragile samples only, so a robust "
        "sample is never distilled again"
    )
    adv_mask: bool = Field(
        False,
        description="Restrict the generator's adversarial (student/teacher disagreement) term to samples judged "
        "fragile (ID-like), so the generator does not chase the OOD-like samples the student is told to forget "
        "(always on while forget_weight > 0). "
        "Off by default: it costs a second attack per step (ATEsc/DFQ 1.53x vs 1.15x, bench/run_overhead.md) and "
        "showed no accuracy gain (bench/results/README.md)",
    )


class RunConfig(Section):
    name: str = Field("run", min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.-]+$", description="Run name prefix")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed for every RNG")
    dir: Path | None = Field(None, description="Run directory; default <runs_root>/<name>-<timestamp>")
    runs_root: Path = Field(Path("runs"), description="Where new run directories are created")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto uses CUDA when present")
    threads: int | None = Field(
        None, ge=1, le=256,
        description="torch CPU threads; unset = auto: the cores other processes leave free, divided between the runs "
        "launched together, re-checked at every evaluation (core/threads.py). Set it when a run must be bit-reproducible "
        "(resume included): results differ in the last bits with the thread count",
    )
    amp: bool = Field(True, description="Mixed precision and channels_last on CUDA")
    amp_dtype: Literal["bf16", "fp16"] = Field(
        "bf16", description="CUDA autocast dtype: bf16 (Ampere and newer), or fp16 with a gradient scaler (older cards)"
    )
    cudnn_benchmark: bool = Field(True, description="On CUDA, let cuDNN pick the fastest kernels for the fixed input shapes")
    eval_every: int = Field(25, ge=1, description="Evaluate the student every N iterations")
    checkpoint_every: int = Field(50, ge=1, description="Checkpoint every N iterations")
    keep_checkpoints: int = Field(3, ge=1, le=1000, description="Checkpoints kept on disk")
    nan_policy: Literal["stop", "rollback"] = Field(
        "stop", description="On a non-finite loss: stop with an error, or roll back to the last checkpoint and halve the learning rates"
    )


_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("atesc_toml_path", default=None)
_environ: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("atesc_environ", default=None)


class _EnvSource(EnvSettingsSource):
    """``ATESC_*`` variables, read from the mapping ``load_config`` was given (default: os.environ)."""

    def _load_env_vars(self) -> Any:
        environ = _environ.get()
        env = os.environ if environ is None else environ
        return parse_env_vars(env, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class _TomlSource(PydanticBaseSettingsSource):
    """The preset file, lowest precedence. Its path comes from ``load_config``."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _toml_path.get()
        return read_toml(path) if path is not None else {}


class Config(BaseSettings):
    """The resolved configuration of a teacher, a DFKD run or a bench cell."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        validate_assignment=True,
    )

    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    dfkd: DFKDConfig = Field(default_factory=DFKDConfig)
    atesc: ATEscConfig = Field(default_factory=ATEscConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: --set (passed as init kwargs) > environment > TOML preset.
        return (init_settings, _EnvSource(settings_cls), _TomlSource(settings_cls))

    @property
    def teacher_seed(self) -> int:
        return self.run.seed if self.teacher.seed is None else self.teacher.seed

    def to_toml_dict(self) -> dict[str, Any]:
        """Plain dict with paths as strings and ``None`` dropped (TOML has no null)."""
        return _drop_none(self.model_dump(mode="json"))

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_toml_dict())


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    return obj


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning every I/O or syntax problem into a one-line ``BadInput``."""
    where = str(path)
    require_file(path, "a TOML file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read: {exc.strerror or exc}", where=where) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"not UTF-8 text (byte {exc.start})", where=where) from None
    if not text.strip():
        raise BadInput("empty file, expected a TOML preset", where=where)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"malformed TOML: {exc}", where=where) from None


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["dfkd.iterations=10", "atesc.enabled=false"]`` -> nested dict; values are parsed as TOML."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise BadInput(f"expected section.field=value, got {pair!r}", where="--set")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # bare words such as cuda or patched:mnist are strings
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise BadInput(f"{key!r} conflicts with an earlier --set", where="--set")
            node = child
        node[leaf] = value
    return nested


def _has_path(tree: dict[str, Any], loc: tuple[Any, ...]) -> bool:
    node: Any = tree
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _env_keys(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name in environ:
        if name.upper().startswith(ENV_PREFIX):
            node = tree
            *parents, leaf = name[len(ENV_PREFIX) :].lower().split(ENV_DELIMITER)
            for part in parents:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    break
            else:
                node[leaf] = True
    return tree


def _source_of(loc: tuple[Any, ...], overrides: dict[str, Any], env_tree: dict[str, Any], path: Path | None) -> str:
    if _has_path(overrides, loc):
        return "--set"
    for depth in range(len(loc), 0, -1):
        if _has_path(env_tree, loc[:depth]):
            return "env " + ENV_PREFIX + ENV_DELIMITER.join(str(p) for p in loc[:depth]).upper()
    return str(path) if path is not None else "defaults"


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Resolve a preset file, the ``ATESC_`` environment and ``--set`` overrides into a ``Config``."""
    toml_path = Path(path) if path is not None else None
    if toml_path is not None:
        read_toml(toml_path)  # file problems are reported before any field problem
    override_tree = parse_overrides(list(overrides or []))
    env = dict(os.environ if environ is None else environ)
    token = _toml_path.set(toml_path)
    env_token = _environ.set(env)
    try:
        return Config(**override_tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(p) for p in err["loc"])
        field = ".".join(loc) or None
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in err and not isinstance(err["input"], dict):
            msg = f"{msg} (got {err['input']!r})"
        extra = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        where = _source_of(loc, override_tree, _env_keys(env), toml_path)
        raise BadInput(msg + extra, where=where, field=field) from None
    finally:
        _toml_path.reset(token)
        _environ.reset(env_token)


def config_from_toml_text(text: str, where: str = "<config>") -> Config:
    """Rebuild a config stored in a run directory or checkpoint, ignoring environment and presets."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"malformed TOML: {exc}", where=where) from None
    token = _toml_path.set(None)
    env_token = _environ.set({})
    try:
        return Config(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise BadInput(err["msg"], where=where, field=".".join(str(p) for p in err["loc"])) from None
    finally:
        _toml_path.reset(token)
        _environ.reset(env_token)

"""fit(): the one training loop every hfssl recipe runs (text and vision alike).

The loop knows nothing about BERT or images. A method is an ``nn.Module`` whose forward returns an
object with ``.loss`` (plus any scalar metrics); the recipe hands over the data, a collate function, an
optional per-step ``transform`` (MLM masking, batched augmentation) and optional hooks.

Exact resume: every random draw the loop makes per step comes from a generator seeded by
``(seed, optimizer step, micro step, process)``, never from state that a prefetching data loader has
already advanced; the data order of an epoch is a fixed ``Dataset.shuffle(seed + epoch)``; and a
checkpoint holds model, optimizer, scheduler, torch RNG and ``trainer_state.json`` (epoch, position);
see :mod:`hfssl.checkpoint` for how it is written.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hfssl.checkpoint import (
    STATE,
    check_settings,
    latest_checkpoint,
    load_latest,
    prepare_output_dir,
    save_checkpoint,
    start_fresh,
)
from hfssl.distributed import cpu_threads_report, usable_cores
from hfssl.errors import Fault
from hfssl.logs import MetricsLogger, count_units, scalar_metrics, summarize_running
from hfssl.optim import build_optimizer, build_progress_scheduler, build_scheduler
from hfssl.report import write_report
from hfssl.run_length import RunLength


@dataclass
class TrainArgs:
    """Arguments of the shared training loop (names follow transformers' TrainingArguments)."""

    output_dir: str = field(default="runs/hfssl", metadata={"help": "Where checkpoints, logs and the model go."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Allow writing into a non-empty output_dir."})
    resume: bool = field(default=False, metadata={"help": "Continue from the latest checkpoint in output_dir."})
    seed: int = field(default=42, metadata={"help": "Seed for initialisation, data order and masking."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps to run; overrides num_epochs when > 0."})
    num_epochs: float = field(default=1.0, metadata={
        "help": "Epochs to run when max_steps <= 0 and no --max_train_minutes is given."})
    max_train_minutes: float | None = field(default=None, metadata={
        "help": "A time budget in minutes of training (evaluation and checkpoints not counted): the learning-rate "
                "schedule is laid over it instead of steps and the run ends at it, or at --max_steps if that comes "
                "first (num_epochs is then not used); --warmup must be a fraction of it."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Batch size per process."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Eval batch size per process."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW decay (never on biases / norms)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    adam_epsilon: float = field(default=1e-6, metadata={"help": "AdamW epsilon."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "linear, cosine or constant after warmup."})
    warmup: float = field(default=0.06, metadata={"help": "Warmup: a fraction of the run if < 1, else steps."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    mixed_precision: str | None = field(default=None, metadata={"help": "no, fp16 or bf16 (default: accelerate config)."})
    logging_steps: int = field(default=20, metadata={"help": "Log every N optimizer steps."})
    eval_steps: int = field(default=200, metadata={"help": "Evaluate every N optimizer steps (0: only at the end)."})
    save_steps: int = field(default=500, metadata={"help": "Checkpoint every N optimizer steps (0: never)."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep only the last K checkpoints."})
    report_to: str = field(default="none", metadata={"help": "Accelerate tracker: none, tensorboard, wandb, ..."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    find_unused_parameters: bool = field(default=False, metadata={"help": "DDP: allow parameters without grad."})
    use_cpu: bool = field(default=False, metadata={"help": "Train on the CPU even if an accelerator is present."})
    torch_compile: bool = field(default=False, metadata={
        "help": "Compile the model with torch.compile (inductor) when Accelerate prepares it: faster steps on GPUs "
                "after a compile of a minute or more."})

    def __post_init__(self):
        if self.lr_scheduler_type not in ("linear", "cosine", "constant"):
            raise ValueError(f"--lr_scheduler_type must be linear, cosine or constant, not {self.lr_scheduler_type!r}")
        if self.max_steps <= 0 and self.num_epochs <= 0 and self.max_train_minutes is None:
            raise ValueError(f"--max_steps {self.max_steps} and --num_epochs {self.num_epochs}: set max_steps > 0 "
                             "or num_epochs > 0")
        if self.mixed_precision not in (None, "no", "fp16", "bf16"):
            raise ValueError(f"--mixed_precision must be no, fp16 or bf16, not {self.mixed_precision!r}")
        at_least = {"per_device_train_batch_size": 1, "per_device_eval_batch_size": 1,
                    "gradient_accumulation_steps": 1, "logging_steps": 1, "eval_steps": 0, "save_steps": 0,
                    "save_total_limit": 1, "dataloader_num_workers": 0}
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ValueError(f"--{name} must be at least {low}, got {getattr(self, name)}"
                                 + (" (0 would delete each checkpoint as it is written)" if name == "save_total_limit" else ""))
        if not self.adam_epsilon > 0:
            raise ValueError(f"--adam_epsilon must be positive, got {self.adam_epsilon}")
        for name in ("learning_rate", "weight_decay", "warmup", "max_grad_norm"):  # lr 0: evaluate a fixed model
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"--{name} must be in [0, 1), got {getattr(self, name)}")
        if self.max_train_minutes is not None:
            self._check_budget()
        if self.resume and self.overwrite_output_dir:
            raise ValueError("--resume continues the run in --output_dir and --overwrite_output_dir starts a new one "
                             "there: pass only one of them")

    def _check_budget(self):
        minutes = self.max_train_minutes
        if not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
            raise ValueError(f"--max_train_minutes must be a positive number of minutes, got {minutes}: give the "
                             "training time budget (e.g. 30), or leave it out to run by --max_steps / --num_epochs")
        if self.warmup >= 1:  # a step count: whether the budget holds that many steps is unknown before the run
            raise ValueError(f"--warmup {self.warmup:g} counts optimizer steps, and --max_train_minutes {minutes:g} "
                             "lays the schedule over time, where a warmup in steps may outlast the budget: give "
                             "--warmup as a fraction of the budget below 1 (e.g. 0.06 for 6 % of it)")


@dataclass
class FitResult:
    model: torch.nn.Module  # unwrapped
    step: int
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float]
    accelerator: Accelerator


def step_generator(seed: int, step: int, micro: int, process: int, device="cpu") -> torch.Generator:
    """A generator that depends only on where the loop is, so a resumed run draws the same numbers."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step * 1_009 + micro * 101 + process * 7_919) % (2**63 - 1))
    return g


def make_accelerator(args: TrainArgs, settings: dict | None = None) -> Accelerator:
    """The Accelerator for a run: accumulation, precision, trackers; seeded before any data or model.

    Before any data work: the output folder is checked (:func:`hfssl.checkpoint.prepare_output_dir`), a
    resume whose ``settings`` (:func:`hfssl.checkpoint.run_settings`) differ from its checkpoint's is
    refused, and a new run in a used folder starts fresh (the old run's checkpoints, tokenizer and logs go).
    """
    out = prepare_output_dir(args.output_dir, args.resume, args.overwrite_output_dir)
    # Without cpu=True, several CPU processes (torchrun / accelerate launch --multi_gpu) silently run as
    # independent single-process jobs: Accelerate only sets up MULTI_CPU when told it is on the CPU.
    no_accelerator = not (torch.cuda.is_available() or torch.backends.mps.is_available())
    if torch.cuda.is_available() and not args.use_cpu:  # TF32 tensor cores for float32 matmuls (Ampere and later)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    accelerator = Accelerator(
        cpu=args.use_cpu or no_accelerator,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(out),
        step_scheduler_with_optimizer=False,  # we step it once per real optimizer step ourselves
        dynamo_backend="inductor" if args.torch_compile else None,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=args.find_unused_parameters)],
    )
    if args.resume:
        ckpt = latest_checkpoint(out)
        try:
            saved = json.loads((ckpt / STATE).read_text()).get("settings")
        except (OSError, ValueError):
            saved = None  # damaged: fit's load_latest sets it aside and checks the one it loads
        check_settings(saved, with_processes(settings, accelerator), ckpt)
    elif out.is_dir():
        if accelerator.is_main_process and (removed := start_fresh(out)):
            print(f"new run in {out}: removed the earlier run's {', '.join(removed)}")
        accelerator.wait_for_everyone()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    for line in cpu_threads_report(accelerator.device.type, accelerator.num_processes, local, torch.get_num_threads(),
                                   usable_cores()):
        accelerator.print(line)
    set_seed(args.seed)
    return accelerator


def with_processes(settings: dict | None, accelerator: Accelerator) -> dict:
    """The run's settings plus the process count (it fixes the data position of a checkpoint)."""
    return {**(settings or {}), "processes": accelerator.num_processes}


def make_loader(data: Dataset, batch_size: int, collate_fn, args: TrainArgs, shuffle_seed: int | None):
    """A loader over ``data``, shuffled by ``Dataset.shuffle(seed)`` (no sampler RNG to save or restore).

    The DataLoader gets its own generator so creating an iterator never draws from torch's global RNG
    (which dropout uses and the checkpoint restores).
    """
    if shuffle_seed is not None:
        data = data.shuffle(seed=shuffle_seed)
    return DataLoader(
        data, batch_size=batch_size, collate_fn=collate_fn, shuffle=False, drop_last=shuffle_seed is not None,
        num_workers=args.dataloader_num_workers, generator=torch.Generator().manual_seed(args.seed),
    )


def evaluate(accelerator: Accelerator, model, loader, eval_step: Callable, summary: Callable, seed: int) -> dict:
    """Per-example sums from ``eval_step(model, batch, generator)``, gathered exactly, then ``summary(totals)``.

    ``gather_for_metrics`` drops the samples Accelerate repeats to even out the last batch, so the result is
    the same with any number of processes.
    """
    model.eval()
    totals: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for i, batch in enumerate(loader):
            per_example = eval_step(model, batch, step_generator(seed, -1, i, accelerator.process_index))
            for k, v in accelerator.gather_for_metrics(per_example).items():
                totals[k] = totals.get(k, 0) + v.double().sum()
    model.train()
    return summary({k: float(v) for k, v in totals.items()})


def fit(
    accelerator: Accelerator,
    model: torch.nn.Module,
    args: TrainArgs,
    *,
    train_data: Dataset | Callable[[int], Dataset],
    draw_ahead: Callable[[int], object] | None = None,
    collate_fn: Callable,
    transform: Callable | None = None,
    eval_data: Dataset | None = None,
    eval_step: Callable | None = None,
    eval_summary: Callable = lambda totals: totals,
    on_step_end: Callable | None = None,
    on_evaluate: Callable | None = None,
    before_evaluate: Callable | None = None,
    settings: dict | None = None,
) -> FitResult:
    """Train ``model`` (forward returns ``.loss``) for ``args.max_steps`` or ``args.num_epochs``, or until
    ``args.max_train_minutes`` of training time (:class:`RunLength`), with a final evaluation at the end.

    ``train_data`` is a Dataset, or a function ``epoch -> Dataset`` for data redrawn every epoch (NSP pairs);
    ``draw_ahead(epoch)``, if given, is called on each machine's first process once an epoch's first batch is
    loaded, with the next epoch when the run will reach it, to start building that epoch in the background
    (:meth:`hfssl.text.epochs.InstanceBuilder.draw_ahead`). Epochs after the first are opened by each machine's
    first process before the others, so they read its cache instead of building the same rows at once.
    ``transform(batch, generator)`` runs on each collated batch before forward (e.g. MLM masking).
    ``on_step_end(model, step, total_steps)`` runs after each optimizer step on the unwrapped model; with
    ``--max_train_minutes`` ``total_steps`` is the projected step count of the run (:meth:`RunLength.hook_total`),
    so ``step / total_steps`` is the run's progress on the clock.
    ``on_evaluate(model, step, metrics)`` runs after each evaluation on every process (e.g. to save
    reconstruction pictures or log extra figures; guard file writes with ``accelerator.is_main_process``).
    ``before_evaluate(model, step)`` runs before each evaluation on every process (e.g. to encode a kNN bank).
    ``settings`` (:func:`hfssl.checkpoint.run_settings`) go into every checkpoint; a resume must repeat them.
    """
    out, main = Path(args.output_dir), accelerator.is_main_process
    epoch_data = train_data if callable(train_data) else (lambda epoch: train_data)
    batch_size, world = args.per_device_train_batch_size, accelerator.num_processes

    def loader_for(epoch: int):
        with accelerator.local_main_process_first() if epoch > 0 and callable(train_data) else nullcontext():
            data = epoch_data(epoch)
        return accelerator.prepare(make_loader(data, batch_size, collate_fn, args, args.seed + epoch))

    optimizer = build_optimizer(model, args.learning_rate, args.weight_decay,
                                (args.adam_beta1, args.adam_beta2), args.adam_epsilon)
    first_loader = loader_for(0)
    steps_per_epoch = math.ceil(len(first_loader) / args.gradient_accumulation_steps)
    if steps_per_epoch == 0:
        raise ValueError(f"the training data gives no full batch of {batch_size} x {world} processes: "
                         "use more data or a smaller --per_device_train_batch_size")
    length = RunLength(args, steps_per_epoch, accelerator)
    if length.budget is None:
        scheduler, schedule = build_scheduler(optimizer, args.lr_scheduler_type, args.warmup, length.steps), None
    else:  # laid over the fraction of the budget spent (the loop sets schedule.progress before each step)
        scheduler, schedule = build_progress_scheduler(optimizer, args.lr_scheduler_type, args.warmup)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    eval_loader = None
    if eval_data is not None and eval_step is not None:
        eval_loader = accelerator.prepare(make_loader(eval_data, args.per_device_eval_batch_size,
                                                      collate_fn, args, shuffle_seed=None))

    settings = with_processes(settings, accelerator)
    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "train_seconds": 0.0, "settings": settings}
    if args.resume:
        state = {"train_seconds": 0.0, **load_latest(accelerator, out, settings), "settings": settings}
    length.seconds = state["train_seconds"]  # a resumed run counts the time already spent
    if main:
        out.mkdir(parents=True, exist_ok=True)
    accelerator.init_trackers("hfssl", config={k: v for k, v in asdict(args).items() if v is not None})
    logger = MetricsLogger(accelerator, out, resumed_at=state["step"] if args.resume else None)
    unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)  # the plain module (hooks, export)

    def run_eval() -> dict:
        if eval_loader is None:
            return {}
        if before_evaluate is not None:
            before_evaluate(unwrapped, state["step"])
        metrics = evaluate(accelerator, unwrapped, eval_loader, eval_step, eval_summary, args.seed)
        metrics = {f"eval_{k}": v for k, v in metrics.items()}
        logger.log(metrics, state["step"])
        if on_evaluate is not None:
            on_evaluate(unwrapped, state["step"], metrics)
        accelerator.print(f"step {state['step']}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        return metrics

    progress = tqdm(total=length.steps, initial=state["step"], disable=not main, desc="train", dynamic_ncols=True)
    running, count_tokens, t0 = {}, 0, time.perf_counter()
    train_metrics, eval_metrics = {}, {}
    model.train()
    length.start()
    while not length.finished(state["step"]):
        loader = first_loader if state["epoch"] == 0 else loader_for(state["epoch"])
        if state["batches_in_epoch"]:
            loader = accelerator.skip_first_batches(loader, state["batches_in_epoch"])
        ahead = draw_ahead is not None and accelerator.is_local_main_process and \
            length.may_reach((state["epoch"] + 1) * steps_per_epoch)
        for micro, batch in enumerate(loader, start=state["batches_in_epoch"]):
            if ahead:  # the loader's workers (if any) are started: no fork while the builder's thread runs
                draw_ahead(state["epoch"] + 1)
                ahead = False
            if transform is not None:
                gen = step_generator(args.seed, state["step"], micro, accelerator.process_index, batch_device(batch))
                batch = transform(batch, gen)
            with accelerator.accumulate(model):
                output = model(**batch)
                if not math.isfinite(loss := float(output.loss.detach())):
                    raise Fault(f"the training loss is {loss} at step {state['step'] + 1} (micro-batch {micro}); "
                                f"stopped without saving (checkpoints in {out / 'checkpoints'} are intact); "
                                "lower --learning_rate, set --max_grad_norm, or check the data and the batch size")
                accelerator.backward(output.loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state["batches_in_epoch"] = micro + 1
            for k, v in scalar_metrics(output).items():
                running[k] = running.get(k, 0.0) + v
            running["_n"] = running.get("_n", 0) + 1
            unit, n_units = count_units(batch)
            count_tokens += n_units * world
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            step = state["step"]
            state["train_seconds"] = length.tick()
            if not accelerator.optimizer_step_was_skipped:
                if schedule is not None:  # the next step's learning rate: the schedule at the time spent
                    schedule.progress = length.progress(step)
                scheduler.step()
            done = length.finished(step)
            if on_step_end is not None:
                on_step_end(unwrapped, step, length.hook_total(step))
            progress.update(1)
            if length.budget is not None and math.isfinite(projected := length.hook_total(step)):
                progress.total = max(step, round(projected))
            if step % args.logging_steps == 0 or done:
                train_metrics = summarize_running(running, unit, count_tokens, time.perf_counter() - t0, scheduler)
                if length.budget is not None:
                    train_metrics["train_minutes"] = state["train_seconds"] / 60
                logger.log(train_metrics, step)
                progress.set_postfix({k: f"{v:.3g}" for k, v in train_metrics.items() if k != "lr"})
                running, count_tokens, t0 = {}, 0, time.perf_counter()
            if args.eval_steps > 0 and step % args.eval_steps == 0 and not done:
                eval_metrics = run_eval()
                length.start()  # evaluation time is not training time
            if args.save_steps > 0 and step % args.save_steps == 0:
                save_checkpoint(accelerator, out, state, args.save_total_limit)
                if main:
                    draw_report(out)
                length.start()
            if done:
                break
        else:
            state["epoch"] += 1
            state["batches_in_epoch"] = 0
    progress.close()
    spent = f" in {state['train_seconds'] / 60:.1f} training minutes" if length.budget is not None else ""
    print(f"[process {accelerator.process_index}/{world}] finished {state['step']} optimizer steps{spent}")
    eval_metrics = run_eval() or eval_metrics
    if main:
        draw_report(out)
    accelerator.end_training()
    return FitResult(unwrapped, state["step"], train_metrics, eval_metrics, accelerator)


def draw_report(out: Path) -> Path | None:
    """``OUTPUT/report.png`` from ``metrics.jsonl`` (at each checkpoint and at the end). The picture is a
    convenience: a failure to draw it is reported and never costs the run."""
    try:
        return write_report(out)
    except Exception as err:  # noqa: BLE001
        print(f"warning: could not draw {out / 'report.png'} ({type(err).__name__}: {err}); metrics.jsonl is intact")
        return None


def batch_device(batch) -> torch.device:
    """The device of the first tensor in a batch (where a transform's generator must live)."""
    values = batch.values() if isinstance(batch, dict) else batch
    return next((v.device for v in values if isinstance(v, torch.Tensor)), torch.device("cpu"))

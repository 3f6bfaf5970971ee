"""Training: one pre-training loop (`loop.train_and_evaluate`) and its named helpers.

    loop           train_and_evaluate: preflight, then the step loop (log / eval / save / stop)
    phases         durations in natural units -> steps; sequence-length phases; their input iterators
    preflight      checks of config, data and workdir that fail before anything compiles
    trainer        the model, optimizer and compiled steps for one parallelism mode (`Trainer`)
    checkpointing  Orbax step checkpoints with the data position and running metric sums; workdir files
    preemption     SIGTERM -> save at the next step boundary and return
    reporting      TensorBoard / stdout lines, throughput, MFU, ETA
    parallel       devices and hosts: pmap vs jit + Mesh, batch layout, multi-process waits
    step, optim    the pure train / eval steps and losses; optimizers and schedules
    finetune       fine-tuning steps and the lr x seed protocol
"""


class TrainingError(ValueError):
    """A problem with the run's configuration or data, found before (or instead of) training."""

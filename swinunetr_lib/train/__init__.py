"""The one training loop (:func:`swinunetr_lib.train.loop.fit`), its optimizer step, checkpoints, batch stream,
metrics log, CPU bf16 guard and run folder lock. Pretraining and fine-tuning supply a step function and data."""

"""Fine-tuning Swin UNETR: task presets (BTCV, MSD), the cases, sliding-window prediction, the run
(``python -m swinunetr_lib.finetune``)."""

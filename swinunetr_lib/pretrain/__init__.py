"""Self-supervised pretraining, the paper's Sec. 3: the SSL model and heads, the proxy-task transforms, the
losses, the data loader, the run (``python -m swinunetr_lib.pretrain``)."""

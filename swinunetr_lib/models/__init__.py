"""Swin UNETR for fine-tuning (builder, encoder weights in and out) and fused window attention."""

"""Figures (matplotlib, headless), learning curves, 3D surfaces and interactive viewers (NiiVue)."""

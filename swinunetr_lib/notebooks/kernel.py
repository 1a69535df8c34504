"""The kernel the runner starts, without ipykernel's "Kernel is running over TCP without encryption" warning.

ipykernel logs that warning (a logger line on the kernel process's stderr, ``[IPKernelApp] WARNING | Kernel is
running over TCP without encryption. ...``) each time a kernel starts on TCP without CurveZMQ keys: papermill
starts one per notebook on localhost, so ``make demo`` printed it seven times about kernels the runner itself
started and talks to over the loopback interface. :class:`QuietKernelManager` gives the kernel a pipe for its
stderr and copies every line to this process's stderr except that one.
"""
from __future__ import annotations

import os
import sys
import threading
from typing import Any, BinaryIO, TextIO

from jupyter_client import AsyncKernelManager, KernelManager

TCP_WARNING = "Kernel is running over TCP without encryption"


def forward_filtered(source: BinaryIO, target: TextIO | None = None, drop: str = TCP_WARNING) -> None:
    """Copy ``source`` line by line to ``target`` (``sys.stderr`` at each line when None) until it ends, leaving
    out the lines that contain ``drop``."""
    with source:
        for raw in iter(source.readline, b""):
            line = raw.decode("utf-8", "replace")
            if drop in line:
                continue
            out = target if target is not None else sys.stderr
            try:
                out.write(line)
                out.flush()
            except (OSError, ValueError):
                pass


class QuietKernelManager(AsyncKernelManager):
    """papermill's kernel manager (nbclient's default, ``AsyncKernelManager``) with the kernel's stderr passed
    through :func:`forward_filtered` (a daemon thread per kernel; it ends when the kernel closes its stderr)."""

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        if kw.get("stderr") is not None:  # a caller's own stderr wins
            return await KernelManager._async_launch_kernel(self, kernel_cmd, **kw)
        read_fd, write_fd = os.pipe()
        try:
            await KernelManager._async_launch_kernel(self, kernel_cmd, **{**kw, "stderr": write_fd})
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # the kernel holds its copy; the pipe ends when the kernel exits
        threading.Thread(target=forward_filtered, args=(os.fdopen(read_fd, "rb"),), name="kernel-stderr",
                         daemon=True).start()

"""Benchmarks of the chat: the harness (``python -m benchmarks.chat_bench``,
its parts in :mod:`benchmarks.runner` and the modules it names), the scale
series (``python -m benchmarks.scale``), the naive baseline server
(:mod:`benchmarks.naive_server`) and the trivial forwarder that measures the
harness's own ceiling (:mod:`benchmarks.forwarder`).

Not part of the chat itself; see ``benchmarks/README.md``.
"""

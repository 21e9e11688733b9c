"""Benchmarks of the chat: the harness (:mod:`benchmarks.chat_bench`), the
naive baseline server (:mod:`benchmarks.naive_server`) and the trivial
forwarder that measures the harness's own ceiling (:mod:`benchmarks.forwarder`).

Not part of the chat itself; see ``benchmarks/README.md``.
"""

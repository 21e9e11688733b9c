"""What a run's arrivals mean: messages parsed by content, counted, timed, summarised.

Messages are parsed by *content* after the run: lines are cut at ``\\n``
across chunk edges, so a server that glues or splits messages (naive) is
counted right.  A message's arrival time is the time of the ``recv()`` that
brought its last byte.  Counted per member: distinct valid messages,
duplicates, messages out of order (a sequence number below one already
received from the same sender), corrupt lines (a ``#`` that is not exactly a
message as sent: glued, cut, interleaved, wrong ``NAME:`` prefix) and echoes
(a sender's own message returned to it).  Latency is send to arrival;
percentiles are nearest-rank.
"""

import math
import re
import statistics


def percentile(sorted_values, q):
    """Nearest-rank percentile (``q`` in 0..100) of an ascending list; None if empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


_MESSAGE_RE = re.compile(rb"^([^\n#]*)#(\d+)\.(\d+)\.(\d+) (x*)=(\d+)\.(\d+)$", re.MULTILINE)
"""One message line: prefix (``NAME: `` or nothing), S, Q, T, padding, S, Q."""


def analyse(chunks, own_ids, prefixes, senders, messages, size, base_ns):
    """Parse every member's chunks by content.

    ``chunks[i]``: list of ``(arrival_ns, bytes)`` of member ``i``;
    ``own_ids[i]``: the sender number of member ``i`` (or -1);
    ``prefixes[s]``: bytes expected before ``#`` in lines of sender ``s``
    (``b"NAME: "``, or ``b""`` for servers that forward raw bytes).
    Returns a dict of counts, sorted latencies (ms), per-member p99s and the
    last arrival.
    """
    total_msgs = senders * messages
    prefix_of = {str(sender).encode(): prefix for sender, prefix in enumerate(prefixes)}
    findall = _MESSAGE_RE.findall
    received = duplicates = out_of_order = corrupt = echoes = 0
    all_latencies = []
    member_p99 = []
    orders = []
    last_arrival = None
    track_order = senders > 1
    for i, member_chunks in enumerate(chunks):
        seen = bytearray(total_msgs)
        top = [-1] * senders
        latencies = []
        order = []
        own = str(own_ids[i]).encode()
        tail = b""
        for arrival, data in member_chunks:
            if tail:
                data = tail + data
            end = data.rfind(b"\n")
            if end < 0:
                tail = data
                continue
            tail = data[end + 1:]
            marks = data.count(b"#", 0, end)
            if not marks:
                continue
            base = arrival - base_ns
            valid = 0
            for prefix, s, q, t, pad, s2, q2 in findall(data, 0, end):
                need = size - 2 * (len(s) + len(q)) - len(t) - 6
                if (s != s2 or q != q2 or prefix_of.get(s) != prefix
                        or len(pad) != (need if need > 0 else 0)):
                    continue
                seq = int(q)
                if seq >= messages:
                    continue
                valid += 1
                if s == own:
                    echoes += 1
                    continue
                sender = int(s)
                key = sender * messages + seq
                if seen[key]:
                    duplicates += 1
                    continue
                seen[key] = 1
                if seq < top[sender]:
                    out_of_order += 1
                else:
                    top[sender] = seq
                latencies.append(base - int(t))
                if track_order:
                    order.append(key)
            corrupt += marks - valid
            if valid and (last_arrival is None or arrival > last_arrival):
                last_arrival = arrival
        received += len(latencies)
        if latencies:
            latencies.sort()
            member_p99.append(percentile(latencies, 99) / 1e6)
            all_latencies.extend(latencies)
        if track_order:
            orders.append((own_ids[i], order))
    all_latencies.sort()
    return {
        "received": received, "duplicates": duplicates, "out_of_order": out_of_order,
        "corrupt": corrupt, "echoes": echoes,
        "latencies": [value / 1e6 for value in all_latencies],
        "member_p99": member_p99, "last_arrival": last_arrival,
        "order_mismatch_members": _order_mismatches(orders, total_msgs) if track_order else 0,
    }


def _order_mismatches(orders, total_msgs):
    """Members whose order of messages is not the reference member's order.

    The reference is the member who got the most messages (a non-sender if
    possible); messages it lacks are ignored in the comparison.
    """
    if not orders:
        return 0
    reference = max(orders, key=lambda item: (item[0] < 0, len(item[1])))[1]
    rank = [-1] * total_msgs
    for position, key in enumerate(reference):
        rank[key] = position
    mismatches = 0
    for _, order in orders:
        previous = -1
        for key in order:
            position = rank[key]
            if position < 0:
                continue
            if position < previous:
                mismatches += 1
                break
            previous = position
    return mismatches


def round_or_none(value, digits):
    """``round(value, digits)``, None stays None."""
    return None if value is None else round(value, digits)


def fill_result(result, stats, first_send, base_ns):
    """Put the figures of :func:`analyse`'s ``stats`` into a run's ``result``
    (counts, loss, latency percentiles, window and deliveries/s)."""
    received = stats["received"]
    expected = result["expected"]
    result.update(received=received, lost=expected - received,
                  loss_pct=round(100 * (expected - received) / expected, 3) if expected else 0.0,
                  **{key: stats[key] for key in ("duplicates", "out_of_order", "corrupt",
                                                 "echoes", "order_mismatch_members")})
    latencies = stats["latencies"]
    for q, key in ((50, "latency_p50_ms"), (95, "latency_p95_ms"), (99, "latency_p99_ms")):
        result[key] = round_or_none(percentile(latencies, q), 3)
    result["latency_max_ms"] = round_or_none(latencies[-1] if latencies else None, 3)
    worst = max(stats["member_p99"], default=None)
    result["latency_p99_worst_member_ms"] = round_or_none(worst, 3)
    if stats["last_arrival"] is not None:
        window = (stats["last_arrival"] - base_ns - first_send) / 1e9
        result["window_s"] = round(window, 4)
        if window > 0:
            result["deliveries_per_s"] = round(received / window, 1)


def summarise(results, variants):
    """Medians per variant of every numeric key, and ratios of deliveries/s.

    ``ratios``: ``"A/B"`` -> median deliveries/s of A over that of B, for the
    last variant listed other than ``ceiling`` as B (the baseline), and for
    ``ceiling`` as B when it was run.  Text keys (``stop_reason``, ``error``)
    get their most common value.
    """
    medians = {}
    for variant in variants:
        rows = [r for r in results if r["variant"] == variant]
        medians[variant] = {"runs": len(rows)}
        for key in dict.fromkeys(key for row in rows for key in row):  # in the rows' order
            values = [r.get(key) for r in rows
                      if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
            if values and key not in ("run",):
                medians[variant][key] = round(statistics.median(values), 4)
            elif key in ("stop_reason", "error"):
                texts = [r.get(key) for r in rows if r.get(key) is not None]
                if texts:
                    medians[variant][key] = statistics.mode(texts)
    ratios = {}
    measured = [v for v in variants if v != "ceiling"]
    bases = measured[-1:] + (["ceiling"] if "ceiling" in variants else [])
    for base in dict.fromkeys(bases):
        denominator = medians.get(base, {}).get("deliveries_per_s")
        for variant in variants:
            numerator = medians[variant].get("deliveries_per_s")
            if variant != base and numerator and denominator:
                ratios[f"{variant}/{base}"] = round(numerator / denominator, 3)
    return {"kind": "summary", "medians": medians, "ratios": ratios}

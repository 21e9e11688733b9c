"""Many clients at once: joining, chatting and leaving concurrently."""

import threading

from chat_common import protocol
from conftest import (
    TIMEOUT,
    collect,
    join_notice,
    leave_notice,
    next_line,
    no_line,
    wait_until,
    welcome_line,
)

CLIENTS = 60
MESSAGES = 6  # per client; each member receives (CLIENTS - 1) * MESSAGES lines


def run_all(target, count, what):
    """Run ``target(i)`` for ``i`` in ``range(count)`` in threads; re-raise errors."""
    errors = []

    def guarded(i):
        try:
            target(i)
        except BaseException as error:  # reported by the main thread
            errors.append((i, error))

    threads = [threading.Thread(target=guarded, args=(i,), name=f"{what} {i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(3 * TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), f"{what}: threads hang"
    assert not errors, f"{what}: {errors[:3]}"


def test_many_clients_join_chat_and_leave_at_once(server, make_client):
    names = [f"Участник_{i:02d}" for i in range(CLIENTS)]
    clients = [None] * CLIENTS
    all_joined = threading.Barrier(CLIENTS, timeout=3 * TIMEOUT)

    def text(i, j):
        return f"сообщение {j} от {i}: " + "ж" * (i * 7 % 50)

    def member(i):
        clients[i] = make_client(server.address, names[i])
        # Nobody chats before everybody is in: then every message has the
        # same audience, and exactly-once can be checked for all members.
        all_joined.wait()
        for j in range(MESSAGES):
            clients[i].send(text(i, j))

    run_all(member, CLIENTS, "member")
    assert server.member_count == CLIENTS

    expected_public = (CLIENTS - 1) * MESSAGES
    streams = {}
    for i, client in enumerate(clients):
        notices, public = [], []
        while len(public) < expected_public:
            line = next_line(client)
            if line.startswith(protocol.NOTICE_PREFIX):
                assert not public, f"a notice among the messages: {line!r}"
                notices.append(line)
            else:
                public.append(line)
        # The notices are the joins of those not yet online when i joined
        # (its welcome lists who was), each exactly once.
        welcome = client.handshake[-1]
        later = [name for name in names if name not in welcome]
        assert sorted(notices) == sorted(join_notice(name) for name in later)
        streams[i] = public
    for client in clients:
        no_line(client, 0)  # nothing beyond: every line exactly once
    no_line(clients[0])

    # Every member got every other member's lines, whole.
    for i, stream in streams.items():
        expected = sorted(
            f"{names[k]}: {text(k, j)}" for k in range(CLIENTS) if k != i for j in range(MESSAGES)
        )
        assert sorted(stream) == expected

    # One order for all: any two members agree on the lines both received.
    for i in range(CLIENTS):
        for k in range(i + 1, CLIENTS):
            mine = [line for line in streams[i] if not line.startswith(f"{names[k]}: ")]
            theirs = [line for line in streams[k] if not line.startswith(f"{names[i]}: ")]
            assert mine == theirs, f"{names[i]} and {names[k]} disagree on the order"
    # And each sender's lines arrive in the order they were sent.
    for k in range(CLIENTS):
        own = [line for line in streams[(k + 1) % CLIENTS] if line.startswith(f"{names[k]}: ")]
        assert own == [f"{names[k]}: {text(k, j)}" for j in range(MESSAGES)]

    # Everybody leaves at once.
    run_all(lambda i: clients[i].close(timeout=TIMEOUT), CLIENTS, "leaver")
    assert all(client.closed.is_set() for client in clients)
    wait_until(lambda: server.member_count == 0, message="all members to be gone")

    # The server still serves.
    last = make_client(server.address, "Последний")
    assert last.handshake[-1] == welcome_line("Последний")
    other = make_client(server.address, "Ещё_один")
    other.send("живой")
    assert collect(last, 2) == [join_notice("Ещё_один"), "Ещё_один: живой"]


def test_members_come_and_go_while_others_chat(server, make_client):
    """Joins and leaves interleave with messages; the stable members still see
    one order, every line once, and each visitor's join, line, leave in turn."""
    stable_names = [f"Постоянный{i}" for i in range(5)]
    stable = [make_client(server.address, name) for name in stable_names]
    for k, member in enumerate(stable):
        collect(member, len(stable) - 1 - k)  # join notices of the later ones
    visitors, visits, per_stable = 20, 2, 20
    start = threading.Barrier(len(stable) + visitors, timeout=3 * TIMEOUT)

    def chat(i):
        start.wait()
        for j in range(per_stable):
            stable[i].send(f"{j}")

    def visit(i):
        start.wait()
        for round_ in range(visits):
            visitor = make_client(server.address, f"Гость{i}")
            visitor.send(f"заход {round_}")
            visitor.close(timeout=TIMEOUT)

    def everyone(i):
        if i < len(stable):
            chat(i)
        else:
            visit(i - len(stable))

    run_all(everyone, len(stable) + visitors, "chatter")

    per_member = (len(stable) - 1) * per_stable + visitors * visits * 3
    streams = [collect(member, per_member, 3 * TIMEOUT) for member in stable]
    for member in stable:
        no_line(member, 0)
    for i, name in enumerate(stable_names):
        assert not any(line.startswith(f"{name}: ") for line in streams[i])  # no echo
        for k, other in enumerate(stable_names):
            if k == i:
                continue
            # Each stable member's lines whole, once, in the order sent.
            assert [line for line in streams[i] if line.startswith(f"{other}: ")] == [
                f"{other}: {j}" for j in range(per_stable)
            ]
            # One order for all: both agree on everything both received.
            if k > i:
                skip = (f"{name}: ", f"{other}: ")
                assert [line for line in streams[i] if not line.startswith(skip)] == [
                    line for line in streams[k] if not line.startswith(skip)
                ]
    for v in range(visitors):
        name = f"Гость{v}"
        own = [
            line for line in streams[0]
            if line in (join_notice(name), leave_notice(name)) or line.startswith(f"{name}: ")
        ]
        expected = []
        for round_ in range(visits):
            expected += [join_notice(name), f"{name}: заход {round_}", leave_notice(name)]
        assert own == expected
    assert server.member_count == len(stable)

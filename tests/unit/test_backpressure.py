"""The limit on buffered inputs, shared between the input partitions."""

from aiokafka import TopicPartition

from agentstream.service.backpressure import MIN_FETCH, over_share

INPUTS = [TopicPartition("in", p) for p in range(4)]
LIMIT = 10_000


def waiting(*partitions: int):  # type: ignore[no-untyped-def]
    return lambda tp: tp.partition in partitions


def test_below_the_limit_every_partition_reads_a_share_at_a_time() -> None:
    assert over_share(LIMIT, 0, {}, INPUTS, waiting(0, 1, 2, 3)) == (set(), 2_500)
    assert over_share(LIMIT, 9_000, {0: 9_000}, INPUTS, waiting()) == (set(), 1_000)


def test_the_share_of_a_partition_with_records_waiting_is_kept_for_it() -> None:
    # Partitions 0 and 1 hold 7,600 inputs (their keys' queued ones); 2 has read nothing
    # and has records: 0 and 1 pause, 2 reads its share.
    over, room = over_share(LIMIT, 7_600, {0: 4_000, 1: 3_600}, INPUTS, waiting(2))
    assert over == {INPUTS[0], INPUTS[1]}
    assert room == 2_500


def test_a_busy_partition_has_the_whole_buffer_when_the_others_have_nothing_to_read() -> None:
    assert over_share(LIMIT, 9_000, {0: 9_000}, INPUTS, waiting(0)) == (set(), 1_000)
    # at the limit, partitions with room in their share may read it if records come
    assert over_share(LIMIT, LIMIT, {0: LIMIT}, INPUTS, waiting(0)) == ({INPUTS[0]}, 2_500)


def test_shares_filled_from_empty_never_overshoot_the_limit() -> None:
    """Four partitions with long backlogs, each fetch draining the first one it finds."""
    counts: dict[int, int] = {}
    backlog = {p: 3_750 for p in range(4)}
    for _ in range(20):
        total = sum(counts.values())
        paused, room = over_share(
            LIMIT, total, counts, INPUTS, lambda tp: backlog[tp.partition] > 0
        )
        for tp in INPUTS:  # aiokafka's getmany: partition after partition, up to room
            if tp in paused or not backlog[tp.partition]:
                continue
            took = min(room, backlog[tp.partition])
            backlog[tp.partition] -= took
            counts[tp.partition] = counts.get(tp.partition, 0) + took
            room -= took
            if not room:
                break
    assert counts == {p: 2_500 for p in range(4)}


def test_no_input_partitions() -> None:
    assert over_share(100, 100, {}, [], waiting()) == (set(), MIN_FETCH)


def test_shares_smaller_than_a_fetch_are_not_kept() -> None:
    """A limit of 20 over 4 partitions: all pause at the limit, none below it."""
    assert over_share(20, 20, {0: 20}, INPUTS, waiting(1, 2, 3)) == (set(INPUTS), MIN_FETCH)
    assert over_share(20, 0, {}, INPUTS, waiting(0, 1, 2, 3)) == (set(), MIN_FETCH)


def test_with_nothing_in_flight_every_partition_reads() -> None:
    for limit in (20, 400, LIMIT):
        paused, _ = over_share(limit, 0, {}, INPUTS, waiting(0, 1, 2, 3))
        assert not paused, limit

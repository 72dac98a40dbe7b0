"""The event bus held by a call that answers first (a stop of many apps): what is published
meanwhile goes out after the hold, in order, and nothing is lost."""

from __future__ import annotations

from bolt_host.services.events import EventBus


async def test_events_published_while_the_bus_is_held_go_out_after_the_hold_in_order() -> None:
    bus = EventBus()
    heard: list[str] = []
    bus.subscribe(lambda event: heard.append(event.name))
    async with bus.stream() as stream:
        with bus.held():
            published = [await bus.publish(name) for name in ("first", "second")]
            await bus.drain()  # nothing is on its way while the hold lasts
            assert heard == [] and stream.empty()
        published.append(await bus.publish("after the hold"))  # behind what was held, not before it
        assert heard == [] and stream.empty()
        await bus.drain()
        assert heard == ["first", "second", "after the hold"]
        assert [stream.get_nowait().id for _ in published] == [event.id for event in published]
    assert [event.id for event in published] == sorted(event.id for event in published)


async def test_a_held_event_reaches_a_stream_that_closes_before_the_backlog_went_out() -> None:
    bus = EventBus()
    async with bus.stream() as stream:
        with bus.held():
            event = await bus.publish("held")
        bus.close_streams()  # shutdown right after the hold: the stream still gets it, then its end
        assert stream.get_nowait() is event
        assert stream.get_nowait() is None
    await bus.drain()

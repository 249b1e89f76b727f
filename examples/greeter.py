"""The example agent: greets each input (``make run`` runs it)."""

from agentstream import Agent, AgentApp, Event, InputEvent, OutputEvent, RunnerContext, action


class Greeting(Event):
    text: str


class Greeter(Agent):
    @action(InputEvent)
    async def start(event: InputEvent, ctx: RunnerContext) -> None:
        count = (ctx.short_term_memory.get("count") or 0) + 1
        ctx.short_term_memory.set("count", count)
        ctx.send_event(Greeting(text=f"hello {event.input} (#{count} for this key)"))

    @action(Greeting)
    def finish(event: Greeting, ctx: RunnerContext) -> None:
        ctx.send_event(OutputEvent(output=event.text))


app = AgentApp(
    "greeter",
    agent=Greeter(),
    input_topic="greeter-in",
    output_topic="greeter-out",
    samples=[("ann", "ann"), ("bob", "bob"), ("ann", "ann again"), ("cy", "cy")],
)

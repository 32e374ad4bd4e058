"""Which process share trains which candidate, and for how many steps, in each round.

sync: one share, all processes; every candidate trains on every process (data parallel).
async (the LinkedIn design): the processes are cut into shares and each candidate trains on
one share, concurrently with the others. A round is one epoch of the candidates' step budget;
the ranks meet at its end. A share whose candidates cost less than the busiest share's has
slack, and with forecasting it spends that slack training the next iteration's candidates,
those the generator would propose if the current leader were kept. The plan is a function of
the state only (no clocks), so every process computes the same plan and a resumed run
repeats it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The time of one training step modelled in multiply-adds per sample: a fixed part (Python,
# optimiser, kernel launches) and a part per layer, besides the multiply-adds themselves.
# Fitted on the development machine (2 CPU cores, torch 2.13, one thread, batch 128 on digits):
# MLP steps took 0.39-0.57 ms at width 16 (depth 1-3), 0.54-1.08 ms at width 128 and
# 0.92-5.7 ms at width 512 (`python experiments/adanet_step_time.py`).
STEP_OVERHEAD_MADDS = 30_000.0
LAYER_OVERHEAD_MADDS = 10_000.0


def num_shares(world_size: int, candidates: int) -> int:
    """The most shares, at most one per candidate, that divide the processes equally."""
    return max(s for s in range(1, min(world_size, candidates) + 1) if world_size % s == 0)


def step_cost(madds: float, depth: int) -> float:
    """The modelled cost of one training step of a candidate of `madds` per sample and `depth`
    hidden layers (or cells).
    """
    return madds + STEP_OVERHEAD_MADDS + LAYER_OVERHEAD_MADDS * (depth + 1)


def assign(costs: list[float], shares: int) -> list[int]:
    """Longest-processing-time-first: the share of each candidate, balancing total cost."""
    loads = [0.0] * shares
    owner = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        share = min(range(shares), key=lambda s: (loads[s], s))
        owner[index] = share
        loads[share] += costs[index]
    return owner


@dataclass
class RoundPlan:
    """Steps per share in one round: `work[share]` lists (candidate key, steps)."""

    work: list[list[tuple[str, int]]]
    forecast_steps: int = 0
    loads: list[float] = field(default_factory=list)

    def owner(self, key: str) -> int | None:
        """The share that trains candidate `key` in this round (None: not trained)."""
        for share, items in enumerate(self.work):
            if any(k == key and steps > 0 for k, steps in items):
                return share
        return None


def plan_round(
    regular: list[tuple[str, float, int, int]],
    forecasts: list[tuple[str, float, int, int]],
    shares: int,
) -> RoundPlan:
    """The plan of one round.

    `regular`: (key, cost per step, steps this round, share) of the iteration's candidates.
    `forecasts`: (key, cost per step, steps done, steps still allowed) of forecast candidates.
    The slack goes one step at a time to the forecast candidate with the fewest steps so far
    (then the first listed), so that every candidate of the next iteration gets a head start:
    a round lasts as long as its busiest share, so one candidate's head start alone would
    shorten no round of the next iteration. A forecast candidate stays on the share that gives
    it its first step (the share with the most slack): its steps are sequential.
    """
    work: list[list[tuple[str, int]]] = [[] for _ in range(shares)]
    loads = [0.0] * shares
    for key, cost, steps, share in regular:
        if steps > 0:
            work[share].append((key, steps))
            loads[share] += steps * cost
    busiest = max(loads)
    slack = [busiest - load for load in loads]
    given = [0] * len(forecasts)
    home: dict[int, int] = {}
    while True:
        choice = None
        for index, (_, cost, done, allowed) in enumerate(forecasts):
            share = home.get(index, max(range(shares), key=lambda s: (slack[s], -s)))
            if given[index] < allowed and slack[share] >= cost:
                rank = (done + given[index], index)
                if choice is None or rank < choice[0]:
                    choice = (rank, index, share)
        if choice is None:
            break
        _, index, share = choice
        home[index] = share
        given[index] += 1
        slack[share] -= forecasts[index][1]
    for index, share in sorted(home.items(), key=lambda item: (item[1], item[0])):
        work[share].append((forecasts[index][0], given[index]))
    return RoundPlan(work, sum(given), loads)

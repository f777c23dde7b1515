"""TReg nodes (category inverse/treg): guider, sampler, all-in-one solve, standalone adaptive negation."""

from . import adaptive_negation, treg_guider, treg_sampler

NODES = [treg_guider.TRegGuiderNode, *treg_sampler.NODES, *adaptive_negation.NODES]

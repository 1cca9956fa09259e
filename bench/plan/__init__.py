"""The plan wing: profiles (what a suite spends), the catalogue of registered components as plain
data, and the planner that turns a profile and a selection into runs. Imports no torch."""

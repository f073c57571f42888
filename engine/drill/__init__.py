"""Drills: a day of the operator's workload and its incidents, replayed in virtual time on the real engine.

``load_scenario(name_or_path)`` reads a scenario (shipped ones: ``shipped()``); ``run_drill(settings, scenario,
seed=, without=)`` runs it against simulated twins of the configured backends and returns the report (a dict);
``report_text`` renders it. See ``scenario.py`` for the file's shape and ``report.py`` for what is measured.
"""

from engine.drill.report import report_text
from engine.drill.runner import run_drill
from engine.drill.scenario import Scenario, load_scenario, shipped

__all__ = ["Scenario", "load_scenario", "report_text", "run_drill", "shipped"]

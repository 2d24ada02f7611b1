"""Tests of erftools.erf (a package: the helpers in _erf_helpers are imported relatively; the worker scripts run
by subprocess put this folder on sys.path themselves)."""

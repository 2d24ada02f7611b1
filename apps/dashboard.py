"""The erftools dashboard: ``streamlit run apps/dashboard.py`` (or ``erftools dashboard``).

The page itself lives in :mod:`erftools.dashboard.app` so that an installed erftools can run it too. Set the results
folder with ``ERFTOOLS_RESULTS=DIR`` (``erftools dashboard --results DIR`` does it for you); without it the
dashboard opens on the example results in ``reports/examples``.
"""
from erftools.dashboard.app import main

main()

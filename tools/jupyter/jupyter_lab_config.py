"""JupyterLab settings for the course (``task lab`` and the JupyterLab browser test).

The course runs offline: JupyterLab must not fetch its news feed or check for updates,
and so must not greet a learner with "Would you like to get notified about official
Jupyter news?". ``settings/overrides.json`` beside this file sets the matching defaults
in the settings editor.
"""

from pathlib import Path

c = get_config()  # noqa: F821 - provided by Jupyter when it loads this file

c.LabApp.news_url = None  # no announcements feed, hence no "get notified?" prompt
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
c.LabApp.app_settings_dir = str(Path(__file__).resolve().parent / "settings")
c.ServerApp.open_browser = True
c.LabApp.extension_manager = "readonly"  # no extension look-ups on PyPI from the server

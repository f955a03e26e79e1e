"""The notebooks in JupyterLab itself, as a researcher uses them: the summary's links open the next notebook in a
tab of the same Lab, and the converter with its summary stays as it was."""

from __future__ import annotations

from support.browser import PAGE_TIMEOUT_MS, SHOTS

RUN_ALL = "notebook:run-all-cells"


def open_in_lab(page, url: str, name: str) -> None:
    """Open notebook ``name`` in JupyterLab and wait until its kernel is idle."""
    page.goto(f"{url}/lab/tree/{name}", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_function(
        "() => { const w = window.jupyterapp.shell.currentWidget; const k = w.sessionContext; "
        "return k && k.session && k.session.kernel && k.session.kernel.status === 'idle'; }",
        timeout=PAGE_TIMEOUT_MS,
    )


def lab_tabs(page) -> list[str]:
    """The titles of the documents open in Lab's main area."""
    return page.evaluate("() => [...window.jupyterapp.shell.widgets('main')].map(w => w.title.label)")


def test_a_next_step_link_opens_a_lab_tab_and_the_converter_stays(lab_url, laptop_page):
    page = laptop_page
    open_in_lab(page, lab_url, "01_convert.ipynb")
    # Before the cells run, the stored output of the converter's cell reads as a sentence, with no widget's state.
    shown = page.inner_text("#main")
    assert "The converter (run this cell to show it)" in shown and "VBox(children" not in shown
    page.evaluate(f"() => window.jupyterapp.commands.execute('{RUN_ALL}')")
    link = page.locator(".jp-OutputArea-output a:text-is('02_inspect_keys.ipynb')").first
    link.wait_for(timeout=PAGE_TIMEOUT_MS)
    summary = page.locator(".widget-html:has-text('OK: source keys')").first
    assert summary.is_visible()
    page.screenshot(path=SHOTS / "lab_links.png")
    page.evaluate("() => { window.chclipStillHere = true; }")  # gone if the page loads again
    link.click()
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.title.label === '02_inspect_keys.ipynb'")
    assert page.evaluate("() => window.chclipStillHere") is True  # no reload, no "Leave site?"
    assert lab_tabs(page) == ["01_convert.ipynb", "02_inspect_keys.ipynb"]
    page.screenshot(path=SHOTS / "lab_link_opened.png")
    # Back in 01: the converter and its summary are where they were.
    page.locator(".lm-TabBar-tab:has-text('01_convert.ipynb')").click()
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.title.label === '01_convert.ipynb'")
    assert summary.is_visible() and page.locator(".widget-text input").first.input_value().endswith(".pt")

"""What the notebooks' data grids share: itables' DataTables widget with no paging but a scroll box of fixed
height, sorting on a header click that a filter change keeps, an *Export CSV* button (the rows as filtered and
sorted), each row coloured by its status, and columns that fit the notebook's width: long names and notes wrap
instead of running off the right edge. Used by the key inspector (:mod:`.key_grid`) and the comparison
(:mod:`.diff_view`).

Keeping the sort: ``ITable.update`` sends new options, and the widget's JavaScript then destroys the DataTable
and builds a new one on the same ``<table>`` element, with the options' initial order; the widget tells Python
only its selected rows, never its order. So the order stays in the browser: DataTables' ``stateSave`` hands the
user's order to :data:`_SAVE_ORDER` on every draw, which keeps it on the table element, and the next DataTable
built there reads it back through :data:`_LOAD_ORDER` (nothing else of the state: not its scroll, not a search).
"""

from __future__ import annotations

import json

from itables import JavascriptFunction
from itables.widget import ITable

GRID_HEIGHT = "420px"
WRAP_NAME, WRAP_TEXT = "chclip-wrap-name", "chclip-wrap-text"  # the classes of columns that wrap (see _WRAPPING)
# DataTables calls this for every row it draws: the row takes its status's colour.
_ROW_COLOUR = "function (row, data) {{ row.style.backgroundColor = {colours}[data[{column}]] || ''; }}"
# The order a user chose, kept on the <table> element that outlives each DataTable the widget builds on it.
_SAVE_ORDER = "function (settings, data) { settings.nTable.chclipOrder = data.order; }"
_LOAD_ORDER = (
    "function (settings) { var order = settings.nTable.chclipOrder;"
    " return order ? {time: Date.now(), order: order} : null; }"
)
# Dotted names wrap at any character, notes between words (headers keep their words whole), neither wider than
# about half the notebook's width.
_WRAPPING = f"""
table.dataTable td.{WRAP_NAME} {{ white-space: normal; word-break: break-all; max-width: 32em; }}
table.dataTable td.{WRAP_TEXT} {{ white-space: normal; overflow-wrap: anywhere; max-width: 32em; }}
"""


class DataGrid(ITable):
    """itables' widget with the CSS that lets the grid's long columns wrap (:data:`WRAP_NAME`, :data:`WRAP_TEXT`)."""

    _css = str(ITable._css) + _WRAPPING


def grid_options(
    *,
    colours: dict[str, str],
    status_column: int,
    csv_name: str,
    column_defs: list | None = None,
    names: list[int] | None = None,
    texts: list[int] | None = None,
) -> dict:
    """The DataTables options (see the module; no search box of its own: the widgets above the grid filter), the
    CSV named ``csv_name.csv``, rows coloured by the status in column ``status_column`` (``colours``: status → CSS
    colour); ``column_defs`` are DataTables' ``columnDefs`` (a column's sort type, say); the columns at ``names``
    (dotted names) and ``texts`` (prose) wrap."""
    row_colour = _ROW_COLOUR.format(colours=json.dumps(colours), column=status_column)
    wrapping = [{"targets": names, "className": WRAP_NAME}] if names else []
    wrapping += [{"targets": texts, "className": WRAP_TEXT}] if texts else []
    options = {
        "layout": {"topStart": "buttons", "topEnd": None, "bottomStart": None, "bottomEnd": None},
        "buttons": [{"extend": "csvHtml5", "text": "Export CSV", "title": csv_name, "footer": False}],
        "paging": False,
        "scrollY": GRID_HEIGHT,
        "scrollX": True,
        "scrollCollapse": True,
        "maxBytes": 0,
        "classes": "compact row-border hover",
        "style": "width:100%;margin:0",
        "text_in_header_can_be_selected": False,
        "rowCallback": JavascriptFunction(row_colour),
        "stateSave": True,  # only the order, kept in the page (see the module)
        "stateSaveCallback": JavascriptFunction(_SAVE_ORDER),
        "stateLoadCallback": JavascriptFunction(_LOAD_ORDER),
        "warn_on_undocumented_option": False,  # rowCallback and the state callbacks are DataTables' own
    }
    if column_defs or wrapping:
        options["columnDefs"] = [*(column_defs or []), *wrapping]
    return options

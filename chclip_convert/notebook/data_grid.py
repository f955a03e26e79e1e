"""What the notebooks' data grids share: itables' DataTables widget with no paging but a scroll box of fixed
height, sorting on a header click, an *Export CSV* button (the rows as filtered and sorted), and each row
coloured by its status. Used by the key inspector (:mod:`.key_grid`) and the comparison (:mod:`.diff_view`)."""

from __future__ import annotations

import json

from itables import JavascriptFunction

GRID_HEIGHT = "420px"
# DataTables calls this for every row it draws: the row takes its status's colour.
_ROW_COLOUR = "function (row, data) {{ row.style.backgroundColor = {colours}[data[{column}]] || ''; }}"


def grid_options(
    *, colours: dict[str, str], status_column: int, csv_name: str, column_defs: list | None = None
) -> dict:
    """The DataTables options (see the module; no search box of its own: the widgets above the grid filter), the
    CSV named ``csv_name.csv``, rows coloured by the status in column ``status_column`` (``colours``: status → CSS
    colour); ``column_defs`` are DataTables' ``columnDefs`` (a column's sort type, say)."""
    row_colour = _ROW_COLOUR.format(colours=json.dumps(colours), column=status_column)
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
        "warn_on_undocumented_option": False,  # rowCallback is DataTables' own, not in itables' list
    }
    if column_defs:
        options["columnDefs"] = column_defs
    return options

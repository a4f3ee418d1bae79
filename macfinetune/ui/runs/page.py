"""The Runs page: every run in the data folder and those opened before, scanned off the GUI thread."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QSortFilterProxyModel, Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QTableView,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from macfinetune.core import runs, runs_table
from macfinetune.ui.runs.model import PATH_ROLE, SORT_ROLE, RunsTableModel

if TYPE_CHECKING:
    from macfinetune.ui.runs.compare import CompareDialog

RESUMABLE = ("stopped", "interrupted")


class RunsPage(QWidget):
    scanned = Signal(object)  # list[RunRow], emitted by the scan thread

    def __init__(self, session, settings, parent=None):
        super().__init__(parent)
        self.setObjectName("runsPage")
        self.session, self.settings = session, settings
        self.model = RunsTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterKeyColumn(-1)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self._scan: threading.Thread | None = None
        self._rescan = False
        self._closed = False
        self.compare_dialog: CompareDialog | None = None
        self._build()
        self.scanned.connect(self._on_scanned)
        session.runsChanged.connect(self.refresh)
        session.stateChanged.connect(self._on_selection_changed)
        self.refresh()

    def _build(self) -> None:
        self.filter = QLineEdit()
        self.filter.setObjectName("runsFilter")
        self.filter.setPlaceholderText("Filter runs")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self._on_filter_text_changed)
        self.table = QTableView()
        self.table.setObjectName("runsTable")
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(6, Qt.SortOrder.DescendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setTabKeyNavigation(False)  # Tab moves on to the next control, not to the next cell
        self.table.verticalHeader().hide()
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.doubleClicked.connect(self._on_table_double_clicked)
        self.table.selectionModel().selectionChanged.connect(self._on_selection_changed)
        self.empty = QLabel()
        self.empty.setObjectName("runsEmpty")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.message = QLabel()  # why the last action on the selected run did not happen
        self.message.setObjectName("runsMessage")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.setVisible(False)
        self.buttons = {}
        bar = QToolBar(self)  # a narrow window folds the buttons that do not fit into its » menu
        bar.setObjectName("runsButtons")
        for name, text, slot in (("open", "Open", self.open_selected), ("resume", "Resume", self.resume_selected),
                                 ("duplicate", "Duplicate as New Run", self.duplicate_selected),
                                 ("compare", "Compare", self.compare_selected),
                                 ("reveal", self._reveal_text(), self.reveal_selected),
                                 ("rename", "Rename…", self.rename_selected),
                                 ("delete", "Move to Trash…", self.delete_selected)):
            button = QPushButton(text)
            button.setObjectName(f"runs_{name}")
            button.clicked.connect(slot)
            self.buttons[name] = button
            bar.addWidget(button)
        row = QHBoxLayout()
        row.addWidget(bar, 1)
        row.addWidget(self.filter)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.empty)
        layout.addWidget(self.message)
        self._on_selection_changed()

    @staticmethod
    def _reveal_text() -> str:
        return "Reveal in Finder" if sys.platform == "darwin" else "Show in File Manager"

    # --- scanning ---------------------------------------------------------------------

    def refresh(self) -> None:
        """Rescan in a plain thread (no MLX is needed); a request during a scan scans again after it."""
        if self._closed:
            return
        if self._scan is not None and self._scan.is_alive():
            self._rescan = True
            return
        home, extra = self.session.data_folder(), self.session.opened_folders()
        self._scan = threading.Thread(target=self._scan_in_thread, args=(home, extra), name="macfinetune-runs-scan",
                                      daemon=True)
        self._scan.start()

    def _scan_in_thread(self, home: Path, extra: list[Path]) -> None:
        self.scanned.emit(runs_table.scan_rows(home, extra))

    def wait_for_scan(self, timeout: float = 10.0) -> None:
        if self._scan is not None:
            self._scan.join(timeout)

    def _on_scanned(self, rows) -> None:
        selected = set(self.selected_paths())
        self.model.set_rows(rows)
        self._select(selected)
        self._update_empty()
        self._on_selection_changed()
        if self._rescan:
            self._rescan = False
            self.refresh()

    def _on_filter_text_changed(self, text: str) -> None:
        self.proxy.setFilterFixedString(text)
        self._update_empty()

    def _update_empty(self) -> None:
        if not self.model.rowCount():
            text = f"No runs yet in {self.session.data_folder()}. Start one, or drop a run folder on the window."
        elif not self.proxy.rowCount():
            text = f"No runs match “{self.filter.text()}”."
        else:
            text = ""
        self.empty.setText(text)
        self.empty.setVisible(bool(text))

    def _select(self, paths: set[Path]) -> None:
        for r in range(self.proxy.rowCount()):
            index = self.proxy.index(r, 0)
            if Path(index.data(PATH_ROLE)) in paths:
                self.table.selectionModel().select(index, self.table.selectionModel().SelectionFlag.Select
                                                   | self.table.selectionModel().SelectionFlag.Rows)

    # --- selection and actions --------------------------------------------------------

    def selected_rows(self) -> list[runs_table.RunRow]:
        rows = {self.proxy.mapToSource(i).row() for i in self.table.selectionModel().selectedRows()}
        return [self.model.row_at(r) for r in sorted(rows)]

    def selected_paths(self) -> list[Path]:
        return [r.path for r in self.selected_rows()]

    def _on_selection_changed(self, *args) -> None:
        rows = self.selected_rows()
        one = len(rows) == 1
        training = any(r.status in ("running", "paused") for r in rows)  # its folder must stay where it is
        for name in ("open", "reveal"):
            self.buttons[name].setEnabled(one)
        self.buttons["rename"].setEnabled(one and not training)
        self.buttons["duplicate"].setEnabled(one and (rows[0].path / "recipe.yaml").is_file())
        self.buttons["delete"].setEnabled(bool(rows) and not training)
        self.buttons["compare"].setEnabled(len(rows) >= 2)
        self.buttons["resume"].setEnabled(one and rows[0].status in RESUMABLE and not self.session.is_training)

    def _on_table_double_clicked(self, index) -> None:
        self.open_selected()

    def _selected_folder(self) -> Path | None:
        """The one selected run's folder; None when it is gone (said under the table, and the list read again)."""
        paths = self.selected_paths()
        if len(paths) != 1:
            return None
        self._say("")
        if not paths[0].is_dir():
            self._say(f"“{paths[0].name}” is no longer in {paths[0].parent}: it was moved or deleted outside "
                      "the app. The list is read again.")
            self.refresh()
            return None
        return paths[0]

    def _say(self, text: str) -> None:
        self.message.setText(text)
        self.message.setVisible(bool(text))

    def open_selected(self) -> None:
        path = self._selected_folder()
        if path is not None:
            self.session.open_run(path)

    def duplicate_selected(self) -> None:
        path = self._selected_folder()
        if path is not None and hasattr(self.session, "duplicateRun"):
            self.session.duplicateRun.emit(str(path))

    def resume_selected(self) -> None:
        path = self._selected_folder()
        if path is not None:
            self.session.resume_run(path)

    def compare_selected(self) -> None:  # compare imports pyqtgraph, so not at start-up
        paths = self.selected_paths()
        if len(paths) >= 2:
            from macfinetune.ui.runs.compare import CompareDialog

            self.compare_dialog = CompareDialog(paths, self)
            self.compare_dialog.show()

    def reveal_selected(self) -> None:
        for path in self.selected_paths()[:1]:
            if sys.platform == "darwin":
                subprocess.Popen(["open", "-R", str(path)])
            else:
                QDesktopServices.openUrl(QUrl.fromLocalFile(str(path.parent)))

    def rename_selected(self, new_name: str | None = None) -> None:
        old = self._selected_folder()
        if old is None or not self.buttons["rename"].isEnabled():
            return
        if new_name is None:
            new_name, ok = QInputDialog.getText(self, "Rename run", "New name:", text=old.name)
            if not ok:
                return
        self._rename(old, new_name.strip())

    def _rename(self, old: Path, new_name: str) -> None:
        try:
            refusal = runs.rename_refusal(old, new_name)
            if refusal is None:
                target = old.rename(old.with_name(new_name))
        except (OSError, ValueError) as e:  # gone since the check, not allowed, a name the file system refuses
            refusal = getattr(e, "strerror", None) or str(e)
        if refusal is not None:
            self._say(f"Cannot rename “{old.name}”: {refusal}")
            return
        self.session.settings.setValue("runs/opened", [str(target) if p == str(old) else p for p in
                                                      map(str, self.session.opened_folders())])
        self.refresh()

    def delete_selected(self, confirm=None) -> None:
        """Move the selected runs to the Trash after asking (``confirm`` replaces the question in tests)."""
        paths = self.selected_paths()
        if not paths:
            return
        ask = confirm or self._confirm_delete
        if not ask(paths):
            return
        from send2trash import send2trash

        for path in paths:
            send2trash(str(path))
        self.refresh()

    def _confirm_delete(self, paths: list[Path]) -> bool:
        names = "\n".join(p.name for p in paths[:10])
        answer = QMessageBox.question(self, "Move to Trash", f"Move {len(paths)} run(s) to the Trash?\n\n{names}",
                                      QMessageBox.StandardButton.Cancel | QMessageBox.StandardButton.Yes,
                                      QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Yes

    def shutdown(self) -> None:
        """The window is closing: no new scans, wait for the running one."""
        self._closed = True
        self.wait_for_scan()
        if self.compare_dialog is not None:
            self.compare_dialog.close()

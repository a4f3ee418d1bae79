"""The main window: a source-list sidebar built from the page registry, a stack of pages, a unified
toolbar (Start/Pause/Resume/Stop), menus with Mac conventions, persistence, drag and drop of run folders,
and the question before closing while a run trains."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QFileDialog,
    QListWidget,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QSplitter,
    QStackedWidget,
    QToolBar,
    QWidget,
)

from macfinetune import __version__
from macfinetune.core import opening, runs
from macfinetune.core.problems import ProblemError
from macfinetune.ui.pages import REGISTRY, page_ids
from macfinetune.ui.session import Session


def create_main_window(engine, settings) -> MainWindow:
    """The session (the engine's one subscriber) and the main window over it."""
    session = Session(engine, settings)
    window = MainWindow(session, settings)
    session.setParent(window)
    return window


class MainWindow(QMainWindow):
    def __init__(self, session, settings, parent=None):
        super().__init__(parent)
        self.setObjectName("mainWindow")
        self.setWindowTitle("macfinetune")
        self.setUnifiedTitleAndToolBarOnMac(True)
        self.setAcceptDrops(True)
        self.setMinimumSize(640, 480)  # narrower than a page needs, the page scrolls (_scrolled)
        self.session, self.settings = session, settings
        self.pages = LazyPages(self._build_page)  # a page is built when first shown or asked for
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.addItems([spec.title for spec in REGISTRY])
        self.sidebar.setMinimumWidth(130)
        self.sidebar.setFrameShape(QListWidget.Shape.NoFrame)
        self.sidebar.setSpacing(2)
        self.stack = QStackedWidget()
        for _ in REGISTRY:
            self.stack.addWidget(QWidget())  # stands in until the page is built
        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("mainSplitter")
        self.splitter.addWidget(self.sidebar)
        self.splitter.addWidget(self.stack)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setCollapsible(1, False)
        self.splitter.setSizes([160, 1100])
        self.setCentralWidget(self.splitter)
        self.sidebar.currentRowChanged.connect(self._on_sidebar_row_changed)
        self._quitting = False
        self._build_actions()
        self._build_toolbar()
        self._build_menus()
        session.stateChanged.connect(self._on_session_state_changed)
        session.preparedChanged.connect(self._update_actions)
        session.runOpened.connect(self._on_session_run_opened)
        session.testPrompt.connect(self._on_session_test_prompt)
        session.duplicateRun.connect(self.duplicate_run)
        self._restore()
        self._update_actions()

    # --- pages ------------------------------------------------------------------------

    def show_page(self, page_id: str) -> None:
        self.sidebar.setCurrentRow([spec.id for spec in REGISTRY].index(page_id))

    def current_page(self) -> str:
        return REGISTRY[max(0, self.stack.currentIndex())].id

    def _on_sidebar_row_changed(self, row: int) -> None:
        if row >= 0:
            self.pages[REGISTRY[row].id]  # noqa: B018 (builds it on first show)
        self.stack.setCurrentIndex(row)

    def _build_page(self, page_id: str):
        """Build page ``page_id`` in place of its stand-in (cold start paints before pyqtgraph, the wizard's
        scans and psutil are imported: only the page shown first is built with the window)."""
        index = [spec.id for spec in REGISTRY].index(page_id)
        page = REGISTRY[index].create(self.session, self.settings)
        stand_in, current = self.stack.widget(index), self.stack.currentIndex()
        self.stack.insertWidget(index, _scrolled(page))
        self.stack.removeWidget(stand_in)
        stand_in.deleteLater()
        self.stack.setCurrentIndex(current)
        if hasattr(page, "progressChanged"):  # after the page applied the event, so the last word is the final state
            page.progressChanged.connect(self.statusBar().showMessage)
        if self.session.run_dir and hasattr(page, "show_run"):  # what runOpened would have told it
            page.show_run(self.session.run_dir)
        return page

    # --- actions, toolbar, menus ------------------------------------------------------

    def _action(self, name: str, text: str, slot, shortcut=None, role=None) -> QAction:
        action = QAction(text, self)
        action.setObjectName(name)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        if role is not None:
            action.setMenuRole(role)
        action.triggered.connect(slot)
        return action

    def _build_actions(self) -> None:
        keys, role = QKeySequence.StandardKey, QAction.MenuRole
        self.start_action = self._action("startAction", "Start", lambda: self.session.start(), "Ctrl+R")
        self.pause_action = self._action("pauseAction", "Pause", lambda: self.session.pause(), "Ctrl+Shift+P")
        self.resume_action = self._action("resumeAction", "Resume", self._on_resume_triggered, "Ctrl+Shift+R")
        self.stop_action = self._action("stopAction", "Stop", lambda: self.session.stop(), "Ctrl+.")
        self.about_action = self._action("aboutAction", "About macfinetune", self._on_about_triggered,
                                         role=role.AboutRole)
        self.prefs_action = self._action("preferencesAction", "Preferences…", self.open_preferences,
                                         keys.Preferences, role.PreferencesRole)
        self.new_action = self._action("newRunAction", "New Run", lambda: self.show_page("new"), keys.New)
        self.open_action = self._action("openAction", "Open…", self._on_open_triggered, keys.Open)
        self.open_folder_action = self._action("openFolderAction", "Open Folder…", self._on_open_folder_triggered,
                                               "Ctrl+Shift+O")
        self.quit_action = self._action("quitAction", "Quit", self.close, keys.Quit, role.QuitRole)
        self.page_actions = [self._action(f"show_{spec.id}", spec.title, lambda _=False, i=spec.id: self.show_page(i),
                                          f"Ctrl+{n}") for n, spec in enumerate(REGISTRY, start=1)]

    def _build_toolbar(self) -> None:
        bar = QToolBar("Run")
        bar.setObjectName("runToolbar")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for action in (self.start_action, self.pause_action, self.resume_action, self.stop_action):
            bar.addAction(action)
        self.addToolBar(bar)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        app_menu = bar.addMenu("macfinetune")
        app_menu.addActions([self.about_action, self.prefs_action, self.quit_action])
        file_menu = bar.addMenu("&File")
        file_menu.addActions([self.new_action, self.open_action, self.open_folder_action])
        self.recent_menu = file_menu.addMenu("Open Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        run_menu = bar.addMenu("&Run")
        run_menu.addActions([self.start_action, self.pause_action, self.resume_action, self.stop_action])
        view_menu = bar.addMenu("&View")
        view_menu.addActions(self.page_actions)
        window_menu = bar.addMenu("&Window")
        window_menu.addAction(self._action("minimizeAction", "Minimize", self.showMinimized, "Ctrl+M"))
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self._action("helpAction", "macfinetune Help", self._on_about_triggered))

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.session.opened_folders()[:10]:
            self.recent_menu.addAction(path.name, lambda p=path: self.open_folder(p))

    def _update_actions(self, *args) -> None:
        state = self.session.state
        self.start_action.setEnabled(self.session.prepared is not None and not self.session.is_training)
        self.start_action.setToolTip("Start the prepared run" if self.session.prepared else
                                     "Prepare a run in New run first (or resume one from Runs)")
        self.pause_action.setEnabled(state == "running")
        self.resume_action.setEnabled(state == "paused" or (not self.session.is_training and self._resumable()))
        self.stop_action.setEnabled(self.session.is_training)

    def _resumable(self) -> bool:
        run_dir = self.session.run_dir
        status = runs.read_status(Path(run_dir)) if run_dir else None
        return status is not None and status.state in ("stopped", "interrupted")

    def _on_resume_triggered(self) -> None:
        if self.session.state == "paused":
            self.session.resume()
        elif self._resumable():
            self.session.resume_run(Path(self.session.run_dir))

    def _on_session_state_changed(self, state: str) -> None:
        self._update_actions()
        if state == "starting":
            self.show_page("monitor")

    def _on_session_run_opened(self, run_dir: str) -> None:
        self.session.run_dir = run_dir if not self.session.is_training else self.session.run_dir
        built = "monitor" in self.pages
        self.show_page("monitor")
        if not built:  # the Monitor was made during this signal, after it was sent: give it the run
            self.pages["monitor"]._on_session_run_opened(run_dir)
        self._update_actions()

    def _on_session_test_prompt(self, run_dir: str, checkpoint: str) -> None:
        built = "playground" in self.pages
        self.show_page("playground")
        if not built:  # made during this signal, after it was sent
            self.pages["playground"].select_run(run_dir, checkpoint)

    def duplicate_run(self, run_dir: str) -> bool:
        """Duplicate as new run (Runs, Monitor): the wizard filled from the run's recipe.yaml, at Review."""
        self.show_page("new")
        try:
            self.pages["new"].load_recipe(Path(run_dir))
        except ProblemError as e:
            QMessageBox.information(self, "Could not duplicate the run", str(e))
            return False
        return True

    # --- opening folders --------------------------------------------------------------

    def open_folder(self, path: Path) -> bool:
        """A run folder opens in the Monitor; a recipe, a model folder or a dataset in the New-run wizard
        (``core.opening`` decides which); anything else says what would open."""
        path = Path(path)
        kind = opening.open_kind(path)
        if kind == "run":
            self.session.open_run(path)
            return True
        wizard = self.pages["new"] if kind != "unknown" else None
        if kind != "unknown" and hasattr(wizard, "open_path"):
            self.show_page("new")
            try:
                wizard.open_path(path)
            except ProblemError as e:
                QMessageBox.information(self, "Could not open it", str(e))
                return False
            return True
        QMessageBox.information(self, "Nothing to open", opening.describe_unknown(path))
        return False

    def _on_open_triggered(self) -> None:
        file, _ = QFileDialog.getOpenFileName(self, "Open a recipe or a dataset", str(self.session.data_folder()),
                                              opening.OPEN_FILTER)
        if file:
            self.open_folder(Path(file))

    def _on_open_folder_triggered(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a run, model or dataset folder",
                                                  str(self.session.data_folder()))
        if folder:
            self.open_folder(Path(folder))

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        for url in event.mimeData().urls()[:1]:
            self.open_folder(Path(url.toLocalFile()))
        event.acceptProposedAction()

    # --- dialogs ----------------------------------------------------------------------

    def open_preferences(self) -> None:
        from macfinetune.ui.preferences import PreferencesDialog

        dialog = PreferencesDialog(self.settings, self, session=self.session)
        if dialog.exec():
            self.pages["runs"].refresh()
        dialog.deleteLater()

    def _on_about_triggered(self) -> None:
        QMessageBox.about(self, "About macfinetune", f"macfinetune {__version__}\nFine-tune LLMs on your Mac with MLX.")

    # --- persistence and closing ------------------------------------------------------

    def _restore(self) -> None:
        s = self.settings
        last = s.value("window/page", "runs")
        self.show_page(last if last in page_ids() else "runs")  # built before the geometry is restored
        geometry = s.value("window/geometry")
        if isinstance(geometry, QByteArray | bytes):
            self.restoreGeometry(geometry)
        else:
            self.resize(1200, 780)
        state = s.value("window/splitter")
        if state is not None:
            self.splitter.restoreState(state)

    def save_state(self) -> None:
        s = self.settings
        s.setValue("window/geometry", self.saveGeometry())
        s.setValue("window/splitter", self.splitter.saveState())
        s.setValue("window/page", self.current_page())
        if "monitor" in self.pages:  # a Monitor never built has nothing new to keep
            self.pages["monitor"].save_state()
        s.sync()

    def ask_stop(self) -> str:
        """'stop' or 'keep': the question before closing while a run trains."""
        box = QMessageBox(QMessageBox.Icon.Question, "A run is training",
                          "Stop the run and quit? Stopping saves a checkpoint; you can resume it later from Runs.",
                          parent=self)
        box.setObjectName("closeQuestion")
        stop = box.addButton("Stop and Quit", QMessageBox.ButtonRole.DestructiveRole)
        keep = box.addButton("Keep Training", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(keep)
        box.exec()
        answer = "stop" if box.clickedButton() is stop else "keep"
        box.deleteLater()
        return answer

    def closeEvent(self, event) -> None:
        if self.session.is_training:
            event.ignore()
            if not self._quitting and self.ask_stop() == "stop":
                self._quitting = True
                self.setWindowTitle("macfinetune — stopping (saving a checkpoint)…")
                self.session.stop(then=self.close)
            return
        self.save_state()
        for page in self.pages.values():  # worker threads (the Runs scan, the wizard's readers) end with the window
            if hasattr(page, "shutdown"):
                page.shutdown()
        super().closeEvent(event)
        app = QApplication.instance()
        if app is not None and self._quitting:
            app.quit()


def _scrolled(page: QWidget) -> QScrollArea:
    """The page at the window's size; below its own minimum (a narrow or short window) it scrolls instead of
    holding the window wide (the wizard's fields and the Monitor's panels need about 860 pixels)."""
    area = QScrollArea()
    area.setObjectName(f"scroll:{page.objectName()}")
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    area.setWidget(page)
    return area


class LazyPages(dict):
    """The window's pages by id; ``pages[id]`` builds one the first time it is asked for. ``in``, ``get`` and
    ``values()`` see only the pages built so far."""

    def __init__(self, build):
        super().__init__()
        self._build = build

    def __missing__(self, page_id: str):
        page = self._build(page_id)
        self[page_id] = page
        return page

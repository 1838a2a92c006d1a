"""Importing existing members with their opening balances from CSV: the upload form and recent imports, one
import's progress (a fragment that polls itself until done) and its report, and the refused rows as CSV.

A manager imports into and sees only their own store; an admin picks the store and sees every import. Each
step of an import is one transaction under the import's row lock (see portal/imports.py).
"""
from __future__ import annotations

from flask import abort, current_app, redirect, render_template, request, url_for
from flask_babel import format_percent
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from wtforms import SelectChoice

from .. import imports
from ..access import access, allowed
from ..extensions import db
from ..models import MemberImport, Store
from ..web import is_htmx, now, render_page, rules
from . import bp
from .forms import ImportForm, ImportForRealForm, ImportStepForm
from .scope import in_scope, is_admin, store_scope

PAGE = "manage/imports.html"
DETAIL = "manage/import.html"
RECENT = 20
REPORT_SHOWN = 200  # refused rows listed on the page; the download has them all
FORM_MARGIN = 64 * 1024  # room in a request for the form's other fields around the file


def max_bytes() -> int:
    """The largest file accepted: IMPORT_MAX_BYTES if set, else what fits in a request (MAX_CONTENT_LENGTH)."""
    configured = current_app.config.get("IMPORT_MAX_BYTES")
    if configured:
        return int(configured)
    return max(FORM_MARGIN, int(current_app.config.get("MAX_CONTENT_LENGTH") or 5 * 1024 * 1024) - FORM_MARGIN)


def _import_or_404(import_id: int, *, for_update: bool = False) -> MemberImport:
    """The import, if it is one the signed-in person may see; another store's is a 404 like a missing one."""
    job = imports.lock(db.session, import_id) if for_update else db.session.get(MemberImport, import_id)
    if job is None or not in_scope(job.store_id):
        abort(404)
    return job


def _upload_form(form: ImportForm | None = None) -> ImportForm:
    form = form or ImportForm(formdata=None)
    if is_admin():
        stores = db.session.scalars(select(Store).where(Store.active.is_(True)).order_by(Store.code)).all()
        form.store_id.choices = [SelectChoice("", _("Choose…"))] + [
            SelectChoice(str(store.id), f"{store.code} · {store.name}") for store in stores]
    else:
        form.store_id.choices = []
    return form


def _chosen_store(form: ImportForm) -> Store | None:
    """The store the upload is for: an admin's pick (an active store), a manager's own store."""
    if not is_admin():
        return current_user.store
    store = db.session.get(Store, form.store_id.data) if form.store_id.data else None
    return store if store is not None and store.active else None


def _recent() -> list[MemberImport]:
    scope = store_scope()
    query = select(MemberImport).order_by(MemberImport.id.desc()).limit(RECENT)
    if scope is not None:
        query = query.where(MemberImport.store_id.in_(scope))
    return list(db.session.scalars(query))


def _page(status: int = 200, form: ImportForm | None = None):
    return render_page(PAGE, "content", status=status, form=_upload_form(form), recent=_recent(),
                       admin=is_admin(), max_size=imports.size_label(max_bytes()),
                       required=[imports.COLUMN_LABELS[name] for name in imports.REQUIRED],
                       optional=[label for name, label in imports.COLUMN_LABELS.items()
                                 if name not in imports.REQUIRED])


def _progress(job: MemberImport, status: int = 200, block: str = "progress", problem=None):
    """The import's page, or for htmx its progress block (which polls the next step until the import is done)."""
    done = job.status == "done"
    share = job.processed_rows / job.total_rows if job.total_rows else 1
    refused = imports.report(job, "refused") if done else []
    return render_page(
        DETAIL, block, status=status, job=job, done=done, percent=format_percent(share, "#,##0%"),
        refused=refused[:REPORT_SHOWN], refused_hidden=max(0, len(refused) - REPORT_SHOWN),
        skipped_rows=[entry["row"] for entry in imports.report(job, "skipped")] if done else [],
        ignored=imports.ignored_columns(job) if done else [], reason_text=imports.reason_text,
        step_form=ImportStepForm(formdata=None), real_form=ImportForRealForm(formdata=None),
        privacy_version=imports.PRIVACY_VERSION, expiry_days=rules().expiry_days, problem=problem,
    )


def _answer(job: MemberImport, block: str = "progress"):
    """After a POST: htmx gets the import's progress block, or (`block="content"`, for a form that starts an
    import from another page) the import page's content, with its address; a plain form gets a 303 to it."""
    target = url_for("manage.show_import", import_id=job.id)
    if is_htmx():
        response = _progress(job, block=block)
        response.headers["HX-Push-Url"] = target
        return response
    return redirect(target, code=303)


@bp.route("/imports")
@access("manager")
def imports_page():
    """The upload form (CSV file, store, dry run) and the recent imports with their counts."""
    return _page()


@bp.route("/imports", methods=["POST"])
@access("manager", recent_login=True)
def start_import():
    """Check the uploaded file as a whole and keep it as an import; its rows are done by the steps that follow.

    A file that cannot be imported (size, encoding, columns) is refused beside the file field and nothing is
    kept. The same form sent twice starts one import."""
    form = _upload_form(ImportForm())
    if not form.validate_on_submit():
        return _page(422, form)
    upload = form.file.data
    limit = max_bytes()
    data = upload.read(limit + 1) if upload else b""
    try:
        job = imports.start_import(
            db.session, data=data, filename=upload.filename if upload else None, store=_chosen_store(form),
            staff=current_user, dry_run=bool(form.dry_run.data), now=now(), max_bytes=limit,
            creation_key=form.idempotency_key.data,
        )
    except imports.ImportRefusal as refusal:
        db.session.rollback()
        getattr(form, refusal.field or "file").errors = [refusal.message]
        return _page(422, form)
    if not in_scope(job.store_id):  # a replayed key of someone else's import
        abort(404)
    db.session.commit()
    return _answer(job, "content")


@bp.errorhandler(413)
def upload_too_large(error):
    """A file larger than a request may be is refused beside the file field, like any other unusable file
    (422, so htmx shows the form again), to those who may import; anyone else gets the plain error page.

    The body is refused before the view runs (reading the form for its CSRF token), so nothing was kept."""
    if request.endpoint != "manage.start_import" or not allowed(current_user, "manager"):
        return render_template("error.html", code=413, message=_("What was sent is too large.")), 413
    form = _upload_form()
    form.file.errors = [imports.too_large(max_bytes()).message]
    return _page(422, form)


@bp.route("/imports/<id:import_id>")
@access("manager")
def show_import(import_id: int):
    """One import: its progress while it runs, its report when it is done."""
    return _progress(_import_or_404(import_id))


@bp.route("/imports/<id:import_id>/step", methods=["POST"])
@access("manager")
def run_import_step(import_id: int):
    """Do the next rows of an import in one transaction, under its lock, and show where it stands.

    The page's progress block posts here until the import is done; without JavaScript a Continue button does."""
    job = _import_or_404(import_id, for_update=True)
    form = ImportStepForm()
    if not form.validate_on_submit():
        db.session.rollback()
        return _progress(_import_or_404(import_id), 422)
    imports.run_step(db.session, job, rules=rules(), now=now(), offset=form.offset.data)
    db.session.commit()
    return _answer(job)


@bp.route("/imports/<id:import_id>/run", methods=["POST"])
@access("manager", recent_login=True)
def run_import_for_real(import_id: int):
    """After a dry run: import the same file for real, as a new import."""
    dry = _import_or_404(import_id)
    form = ImportForRealForm()
    if not form.validate_on_submit():
        return _progress(dry, 422, "content", problem=_("This form is damaged. Reload the page."))
    try:
        job = imports.repeat_for_real(db.session, dry, staff=current_user, now=now(),
                                      creation_key=form.idempotency_key.data)
    except imports.ImportRefusal as refusal:
        db.session.rollback()
        return _progress(dry, 422, "content", problem=refusal.message)
    db.session.commit()
    return _answer(job, "content")


@bp.route("/imports/<id:import_id>/refused.csv")
@access("manager")
def import_refusals_csv(import_id: int):
    """The refused rows, each with its row number and reason and the row as it was, to correct and import again."""
    job = _import_or_404(import_id)
    body = imports.refusals_csv(job, row_label=_("Row"), reason_label=_("Reason"))
    response = current_app.response_class("\ufeff" + body, mimetype="text/csv")  # the BOM tells Excel it is UTF-8
    response.headers["Content-Disposition"] = f'attachment; filename="import-{job.id}-refused.csv"'
    return response

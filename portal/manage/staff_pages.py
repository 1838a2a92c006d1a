"""Staff and stores: the staff list with its filters, new accounts, deactivation, reactivation, password
resets and role changes; the stores (admins only).

A manager sees the staff of their own store and works its cashiers; someone of another store is a 404,
a manager or admin of their own store a 403. An admin works everyone and every store. Each action calls one
service function (portal/staff.py) and commits once; a refusal changes nothing and is shown beside its field
(or in the row) with status 422. htmx gets the row or the page's block back, a plain form a 303.
"""
from __future__ import annotations

from flask import abort, redirect, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import func, select
from wtforms import SelectChoice

from .. import staff as staff_service
from ..access import access
from ..extensions import db
from ..models import Staff, Store
from ..staff import ROLES, StaffError
from ..web import is_htmx, now, render_page
from . import bp
from .forms import (
    ROLE_LABELS,
    StaffActionForm,
    StaffFilterForm,
    StaffForm,
    StaffRoleForm,
    StoreEditForm,
    StoreForm,
)
from .scope import all_stores, in_scope, is_admin, store_choices, store_scope

STAFF = "manage/staff.html"
STORES = "manage/stores.html"
LIST_LIMIT = 500

STAFF_OUTCOMES = ("create", "replayed", "deactivate", "reactivate", "role", "unchanged")
STORE_OUTCOMES = ("create", "replayed", "update", "close", "reopen", "unchanged")


def staff_message(outcome: str, person: Staff) -> str:
    """What the page says after an action on someone's account."""
    username = person.username
    if outcome == "create":
        return gettext("The account %(username)s is created. They can sign in now.", username=username)
    if outcome == "replayed":
        return gettext("This form was already sent: the account %(username)s was created then.", username=username)
    if outcome == "deactivate":
        return gettext("%(username)s is deactivated and signed out everywhere.", username=username)
    if outcome == "reactivate":
        return gettext("%(username)s can sign in again.", username=username)
    if outcome == "role":
        role = ROLE_LABELS.get(person.role, person.role)
        if person.store is None:
            return gettext("%(username)s now works as %(role)s.", username=username, role=role)
        return gettext("%(username)s now works as %(role)s at %(store)s.", username=username, role=role,
                       store=person.store.name)
    return gettext("Nothing changed for %(username)s.", username=username)


def store_message(outcome: str, store: Store) -> str:
    """What the stores page says after an action on a store."""
    code = store.code
    if outcome == "create":
        return gettext("The store %(code)s is created.", code=code)
    if outcome == "replayed":
        return gettext("This form was already sent: the store %(code)s was created then.", code=code)
    if outcome == "update":
        return gettext("The store %(code)s is saved.", code=code)
    if outcome == "close":
        return gettext("The store %(code)s is closed. Its registers can no longer use the API.", code=code)
    if outcome == "reopen":
        return gettext("The store %(code)s is open again.", code=code)
    return gettext("Nothing changed for the store %(code)s.", code=code)


# --- who sees whom --------------------------------------------------------------------------------------

def _person_or_404(staff_id: int) -> Staff:
    """Someone the signed-in person may see (locked, as every caller writes); another store's is a 404."""
    person = db.session.get(Staff, staff_id, with_for_update=True)
    if person is None or not in_scope(person.store_id):
        abort(404)
    return person


def _open_stores() -> list[Store]:
    return [store for store in all_stores() if store.active]


def _new_staff_form(form: StaffForm | None = None) -> StaffForm:
    """The new-account form: an admin picks any role and open store; a manager creates cashiers of their store."""
    fresh = form is None
    form = form or StaffForm(formdata=None)
    if is_admin():
        form.role.choices = [SelectChoice(role, ROLE_LABELS[role]) for role in ROLES]
        form.store_id.choices = store_choices(_open_stores(), any_label=_l("No store (administrators only)"))
    else:
        form.role.choices = [SelectChoice("cashier", ROLE_LABELS["cashier"])]
        store = current_user.store
        form.store_id.choices = [SelectChoice(str(store.id), f"{store.code} · {store.name}")] if store else []
    if fresh:
        form.role.data = "cashier"
        form.store_id.data = current_user.store_id
    return form


def _row_context(stores: list[Store] | None = None) -> dict:
    """What every row needs: who may act on whom, and the stores an admin can move someone to."""
    return {"admin": is_admin(), "may_manage": lambda person: staff_service.may_manage(current_user, person),
            "role_labels": ROLE_LABELS, "roles": ROLES,
            "move_stores": stores if stores is not None else (_open_stores() if is_admin() else [])}


# --- the list -------------------------------------------------------------------------------------------

def _filtered_rows(filters: StaffFilterForm):
    admin = is_admin()
    stores = all_stores() if admin else []
    filters.store.choices = store_choices(stores)
    store_ids = store_scope()
    if admin and filters.store.data in {store.id for store in stores}:
        store_ids = [filters.store.data]
    status = filters.chosen_status()
    return staff_service.staff_list(
        db.session, store_ids=store_ids, role=filters.chosen_role(),
        active=None if status == "all" else status == "active", limit=LIST_LIMIT,
    )


def _staff_page(status: int = 200, *, block: str | None = "staff", filters: StaffFilterForm | None = None,
                form: StaffForm | None = None, **context):
    filters = filters or StaffFilterForm(request.args)
    rows = _filtered_rows(filters)
    context.setdefault("done", None)
    context.setdefault("problem", None)
    context.setdefault("new_password", None)
    return render_page(STAFF, block, status=status, filters=filters, rows=rows, form=_new_staff_form(form),
                       limit_reached=len(rows) >= LIST_LIMIT, row_results={}, **_row_context(), **context)


@bp.route("/staff")
@access("manager")
def list_staff():
    """The staff a manager (their store) or an admin (every store) looks after, with when each last signed in."""
    done = None
    shown = db.session.get(Staff, request.args.get("staff", type=int) or 0)
    if shown is not None and in_scope(shown.store_id) and request.args.get("done") in STAFF_OUTCOMES:
        done = staff_message(request.args["done"], shown)
    return _staff_page(block="list", done=done)


@bp.route("/staff", methods=["POST"])
@access("manager", recent_login=True)
def create_staff():
    """A new account: an admin any role at any store, a manager a cashier of their own store. The same form
    sent twice creates one account."""
    form = _new_staff_form(StaffForm())
    if not form.validate_on_submit():
        db.session.rollback()
        return _staff_page(422, form=form, filters=StaffFilterForm(formdata=None))
    store = db.session.get(Store, form.store_id.data) if form.store_id.data else None
    try:
        created = staff_service.create_account(
            db.session, username=form.username.data or "", name=form.name.data or "",
            password=form.password.data or "", role=form.role.data or "", store=store, phone=form.phone.data,
            now=now(), created_by=current_user, ip=request.remote_addr, creation_key=form.idempotency_key.data,
        )
    except StaffError as error:
        db.session.rollback()
        if error.code == "forbidden":
            abort(403)
        field = getattr(form, error.field, None) if error.field else None
        if field is None:
            return _staff_page(422, form=form, problem=error.message, filters=StaffFilterForm(formdata=None))
        field.errors = [error.message]
        return _staff_page(422, form=form, filters=StaffFilterForm(formdata=None))
    db.session.commit()
    person = created.row
    outcome = "replayed" if created.replayed else "create"
    if is_htmx():
        return _staff_page(filters=StaffFilterForm(formdata=None), done=staff_message(outcome, person))
    return redirect(url_for("manage.list_staff", done=outcome, staff=person.id), code=303)


# --- one person -----------------------------------------------------------------------------------------

def _row(person: Staff, status: int = 200, **result):
    """One row of the list (htmx), with what just happened to it."""
    last_login = staff_service.staff_list(db.session, store_ids=None, limit=1, only_id=person.id)
    return render_page(STAFF, "row", status=status, person=person,
                       last_login=last_login[0][1] if last_login else None,
                       row_results={person.id: result}, **_row_context())


def _act(staff_id: int, form, step, outcome: str):
    """Lock the person, check the form, let `step(person, form)` call one service function, commit once.

    A refusal changes nothing: the row (htmx) or the page shows it with 422. "forbidden" is a 403."""
    person = _person_or_404(staff_id)
    problem = None
    if not form.validate_on_submit():
        problem = _l("This form has expired. Reload the page and try again.")
        errors = {name: field.errors for name, field in form._fields.items() if field.errors}
    else:
        try:
            changed = step(person, form)
        except StaffError as error:
            db.session.rollback()
            if error.code == "forbidden":
                abort(403)
            problem = error.message
            errors = {}
        else:
            db.session.commit()
            shown = outcome if changed is not False else "unchanged"
            if is_htmx():
                return _row(person, done=staff_message(shown, person))
            return redirect(url_for("manage.list_staff", done=shown, staff=person.id, status="all"), code=303)
    db.session.rollback()
    if is_htmx():
        return _row(_person_or_404(staff_id), 422, problem=problem, errors=errors)
    return _staff_page(422, block=None, problem=problem)


@bp.route("/staff/<id:staff_id>/deactivate", methods=["POST"])
@access("manager", recent_login=True)
def deactivate_staff(staff_id: int):
    """Deactivate someone: all their logins end and their next request is refused."""
    def step(person, form):
        return staff_service.deactivate_staff(db.session, person, actor=current_user, now=now(),
                                              ip=request.remote_addr)

    return _act(staff_id, StaffActionForm(), step, "deactivate")


@bp.route("/staff/<id:staff_id>/reactivate", methods=["POST"])
@access("manager", recent_login=True)
def reactivate_staff(staff_id: int):
    """Let a deactivated person sign in again."""
    def step(person, form):
        return staff_service.reactivate_staff(db.session, person, actor=current_user, now=now(),
                                              ip=request.remote_addr)

    return _act(staff_id, StaffActionForm(), step, "reactivate")


@bp.route("/staff/<id:staff_id>/role", methods=["POST"])
@access("admin", recent_login=True)
def change_staff_role(staff_id: int):
    """Change someone's role or store (admins)."""
    def step(person, form):
        store = db.session.get(Store, form.store_id.data) if form.store_id.data else None
        return staff_service.change_role(db.session, person, role=form.role.data or "", store=store,
                                         actor=current_user, now=now(), ip=request.remote_addr)

    return _act(staff_id, StaffRoleForm(), step, "role")


@bp.route("/staff/<id:staff_id>/password", methods=["POST"])
@access("manager", recent_login=True)
def reset_staff_password(staff_id: int):
    """Give someone a new generated password and end their logins. The password is in this answer only
    (never in a URL, a cookie or the log), so there is no redirect: the page shows it once."""
    person = _person_or_404(staff_id)
    if not StaffActionForm().validate_on_submit():
        db.session.rollback()
        if is_htmx():
            return _row(person, 422, problem=_l("This form has expired. Reload the page and try again."))
        return _staff_page(422, block=None, problem=_l("This form has expired. Reload the page and try again."))
    try:
        password = staff_service.reset_password(db.session, person, actor=current_user, now=now(),
                                                ip=request.remote_addr, keep_token=current_user.auth_token)
    except StaffError as error:
        db.session.rollback()
        if error.code == "forbidden":
            abort(403)
        if is_htmx():
            return _row(person, 422, problem=error.message)
        return _staff_page(422, block=None, problem=error.message)
    db.session.commit()
    if is_htmx():
        return _row(person, new_password=password)
    return _staff_page(block=None, new_password=password, password_for=person)


# --- stores (admins) ------------------------------------------------------------------------------------

def _stores_page(status: int = 200, *, form: StoreForm | None = None, **context):
    counts = dict(db.session.execute(
        select(Staff.store_id, func.count(Staff.id)).where(Staff.active.is_(True)).group_by(Staff.store_id)
    ).all())
    context.setdefault("done", None)
    context.setdefault("problem", None)
    context.setdefault("edit_errors", {})
    return render_page(STORES, "stores", status=status, stores=all_stores(), staff_counts=counts,
                       form=form or StoreForm(formdata=None), timezones=sorted(staff_service.timezones()),
                       **context)


@bp.route("/stores")
@access("admin")
def list_stores():
    """Every store: its code, name, time zone, whether it is open, and how many active staff it has."""
    done = None
    store = db.session.get(Store, request.args.get("store", type=int) or 0)
    if store is not None and request.args.get("done") in STORE_OUTCOMES:
        done = store_message(request.args["done"], store)
    return _stores_page(done=done)


@bp.route("/stores", methods=["POST"])
@access("admin", recent_login=True)
def create_store():
    """A new store; the same form sent twice creates one."""
    form = StoreForm()
    if not form.validate_on_submit():
        db.session.rollback()
        return _stores_page(422, form=form)
    try:
        created = staff_service.create_store(
            db.session, code=form.code.data or "", name=form.name.data or "", timezone=form.timezone.data or "",
            actor=current_user, now=now(), ip=request.remote_addr, creation_key=form.idempotency_key.data,
        )
    except StaffError as error:
        db.session.rollback()
        field = getattr(form, error.field, None) if error.field else None
        if field is None:
            return _stores_page(422, form=form, problem=error.message)
        field.errors = [error.message]
        return _stores_page(422, form=form)
    db.session.commit()
    outcome = "replayed" if created.replayed else "create"
    if is_htmx():
        return _stores_page(done=store_message(outcome, created.row))
    return redirect(url_for("manage.list_stores", done=outcome, store=created.row.id), code=303)


def _store_or_404(store_id: int) -> Store:
    store = db.session.get(Store, store_id, with_for_update=True)
    if store is None:
        abort(404)
    return store


def _store_step(store_id: int, form, step, outcome: str):
    store = _store_or_404(store_id)
    if form.validate_on_submit():
        try:
            changed = step(store, form)
        except StaffError as error:
            db.session.rollback()
            errors = {error.field: [error.message]} if error.field else {}
            problem = None if error.field else error.message
            return _stores_page(422, problem=problem, edit_errors={store_id: errors},
                                edit_values={store_id: {"name": form.data.get("name"),
                                                        "timezone": form.data.get("timezone")}})
        db.session.commit()
        shown = outcome if changed else "unchanged"
        if is_htmx():
            return _stores_page(done=store_message(shown, store))
        return redirect(url_for("manage.list_stores", done=shown, store=store.id), code=303)
    db.session.rollback()
    return _stores_page(422, problem=_l("This form has expired. Reload the page and try again."))


@bp.route("/stores/<id:store_id>", methods=["POST"])
@access("admin", recent_login=True)
def update_store(store_id: int):
    """Rename a store or change its time zone."""
    def step(store, form):
        return staff_service.update_store(db.session, store, name=form.name.data or "",
                                          timezone=form.timezone.data or "", actor=current_user, now=now(),
                                          ip=request.remote_addr)

    return _store_step(store_id, StoreEditForm(), step, "update")


@bp.route("/stores/<id:store_id>/close", methods=["POST"])
@access("admin", recent_login=True)
def close_store(store_id: int):
    """Close a store: its registers' tokens stop working; its staff, members and history stay."""
    def step(store, form):
        return staff_service.set_store_open(db.session, store, open_=False, actor=current_user, now=now(),
                                            ip=request.remote_addr)

    return _store_step(store_id, StaffActionForm(), step, "close")


@bp.route("/stores/<id:store_id>/reopen", methods=["POST"])
@access("admin", recent_login=True)
def reopen_store(store_id: int):
    """Open a closed store again."""
    def step(store, form):
        return staff_service.set_store_open(db.session, store, open_=True, actor=current_user, now=now(),
                                            ip=request.remote_addr)

    return _store_step(store_id, StaffActionForm(), step, "reopen")

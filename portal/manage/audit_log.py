"""The audit log viewer: who did what, when, where, with the before and after of each change.

Managers see the entries of their own store: those made there and those made by its staff. Admins see every
entry and may pick a store. Filters come from the query string, so a filtered view can be bookmarked; values
that are not valid are ignored (an old bookmark still opens), and a date that cannot be read is pointed out
beside its field. Newest first, 50 a page, paged by keyset ("Older").
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from babel.dates import format_datetime as babel_format_datetime
from flask import request, url_for
from flask_babel import get_locale, gettext
from flask_babel import lazy_gettext as _l
from wtforms import SelectChoice

from .. import audit
from ..access import access
from ..extensions import db
from ..models import AuditLog
from ..web import is_htmx, render_page
from . import bp
from .forms import AuditFilterForm, row_id
from .scope import all_stores, chosen_store, in_scope, is_admin, store_choices, zone_of

TEMPLATE = "manage/audit_log.html"
PAGE_SIZE = 50
FILTERS = ("action", "staff", "store", "target", "date_from", "date_to")

ACTION_LABELS = {
    "rules.set": _l("Changed a rule"),
    "tiers.set": _l("Changed a tier"),
    "points.adjust": _l("Adjusted a member's points"),
    "staff.create": _l("Created a staff account"),
    "staff.role_change": _l("Changed a staff member's role"),
    "staff.deactivate": _l("Deactivated a staff account"),
    "staff.reactivate": _l("Reactivated a staff account"),
    "staff.password_reset": _l("Reset a staff member's password"),
    "store.create": _l("Opened a new store"),
    "store.update": _l("Changed a store"),
    "store.close": _l("Closed a store"),
    "store.reopen": _l("Reopened a store"),
    "takings.set": _l("Entered a store's takings"),
    "api_token.create": _l("Created a register token"),
    "api_token.revoke": _l("Revoked a register token"),
    "member.view": _l("Viewed a member's personal data"),
    "member.activation_code": _l("Issued a new activation code"),
    "member.activate": _l("Member activated their account"),
    "member.profile": _l("Member changed their profile"),
    "member.password": _l("Member changed their password"),
    "member.export": _l("Member downloaded their data"),
    "member.erase": _l("Member deleted their account"),
    "members.export": _l("Exported members (CSV)"),
    "members.import": _l("Imported members (CSV)"),
    "complaint.opened": _l("Complaint made"),
    "complaint.acknowledged": _l("Complaint acknowledged"),
    "complaint.reply": _l("Replied to a complaint"),
    "complaint.note": _l("Internal note on a complaint"),
    "complaint.assigned": _l("Complaint assigned"),
    "complaint.resolved": _l("Complaint resolved"),
    "complaint.closed": _l("Complaint closed"),
    "complaint.reopened": _l("Complaint reopened by the member"),
    "complaint.rated": _l("Complaint resolution rated"),
    "complaint.goodwill": _l("Goodwill points for a complaint"),
    "ledger.post": _l("Points moved (ledger entries)"),
    "auth.login": _l("Signed in"),
    "auth.logout": _l("Signed out"),
    "auth.login_failed": _l("Failed sign-in"),
    "auth.activation_failed": _l("Wrong activation code"),
    "auth.password_failed": _l("Wrong password entered again"),
    "auth.locked": _l("Attempt refused: too many failures"),
    "auth.reauth": _l("Entered the password again"),
    "auth.reauth_failed": _l("Wrong password when asked again"),
    "access.denied": _l("Refused: no access"),
    "database.backup": _l("Backed up the database"),
    "database.restore": _l("Restored the database from a backup"),
}

ROLE_LABELS = {
    "admin": _l("Administrator"),
    "manager": _l("Manager"),
    "cashier": _l("Cashier"),
    "member": _l("Member"),
    "register": _l("A register (API)"),
    "anonymous": _l("Not signed in"),
    "system": _l("A daily job or the command line"),
}


def role_label(code: str | None) -> str:
    label = ROLE_LABELS.get(code or "")
    return str(label) if label is not None else (code or "")


@dataclass(frozen=True)
class Change:
    """One key of an entry's before and after; `before`/`after` are None where that side lacks the key."""

    key: str
    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _shown(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _parsed(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {"": text}
    return value if isinstance(value, dict) else {"": value}


def changes(entry: AuditLog) -> list[Change]:
    """The entry's before and after, key by key, in the order the keys first appear."""
    before, after = _parsed(entry.before), _parsed(entry.after)
    keys = list(dict.fromkeys([*(before or {}), *(after or {})]))
    return [Change(key=key,
                   before=_shown(before[key]) if before is not None and key in before else None,
                   after=_shown(after[key]) if after is not None and key in after else None)
            for key in keys]


def local_time(moment: datetime, zone: str, fmt: str = "short") -> str:
    """A UTC time as the clock showed it in `zone`, in the reader's language."""
    return babel_format_datetime(moment, fmt, tzinfo=ZoneInfo(zone), locale=get_locale())


def by_member(entry: AuditLog) -> bool:
    """A step a member took themselves (filing or reopening a complaint from their phone, rating it)."""
    after = _parsed(entry.after) or {}
    return entry.staff_id is None and "member_id" in after


def action_label(code: str) -> str:
    label = ACTION_LABELS.get(code)
    return str(label) if label is not None else code


def _action_choices(present: list[str], chosen: str | None) -> list[SelectChoice]:
    """Any action, each group with more than one action present ("complaint.*"), then each action."""
    codes = sorted(set(present) | ({chosen} if chosen and not chosen.endswith(".*") else set()))
    groups = sorted({code.split(".", 1)[0] for code in codes if "." in code})
    groups = [group for group in groups if sum(code.startswith(group + ".") for code in codes) > 1]
    if chosen and chosen.endswith(".*") and chosen[:-2] not in groups:
        groups.append(chosen[:-2])
    return [SelectChoice("", _l("Any action")),
            *(SelectChoice(f"{group}.*", gettext("Every “%(group)s” action", group=group)) for group in groups),
            *(SelectChoice(code, action_label(code)) for code in codes)]


def _filters_query() -> dict:
    """The filters as sent, for the "Older" and "Newest" links (only the known ones, only when given)."""
    return {name: request.args[name] for name in FILTERS if request.args.get(name)}


def _read_filters(form: AuditFilterForm, store_ids: list[int] | None, zone: str) -> dict:
    """The valid filters as search() takes them; the choices of the action and staff pickers are set here, and
    a value that is not one of them is shown as "any"."""
    action, group = form.chosen_action()
    form.action.choices = _action_choices(audit.actions_present(db.session, store_ids),
                                          action or (f"{group}.*" if group else None))
    if not action and not group:
        form.action.data = ""
    people = audit.staff_present(db.session, store_ids)
    form.staff.choices = [SelectChoice("", _l("Anyone")),
                          *(SelectChoice(str(person.id), f"{person.name} ({person.username})") for person in people)]
    staff_id = form.staff.data if form.staff.data in {person.id for person in people} else None
    if staff_id is None:
        form.staff.data = None
    local_zone = ZoneInfo(zone)
    first_day, last_day = form.chosen_date(form.date_from), form.chosen_date(form.date_to)
    since = datetime.combine(first_day, time.min, local_zone).astimezone(timezone.utc) if first_day else None
    until = (datetime.combine(last_day + timedelta(days=1), time.min, local_zone).astimezone(timezone.utc)
             if last_day else None)
    return dict(action=action, action_prefix=group, staff_id=staff_id, target=form.chosen_target(), since=since,
                until=until)


@bp.route("/audit")
@access("manager")
def show_audit_log():
    """The audit log, newest first, filtered by action, staff member, store (admins), target and dates."""
    form = AuditFilterForm(request.args)
    admin = is_admin()
    stores = all_stores() if admin else []
    form.store.choices = store_choices(stores)
    wanted_store = form.store.data if admin and form.store.data in {store.id for store in stores} else None
    if not wanted_store:
        form.store.data = None
    store, store_ids = chosen_store(wanted_store)
    zone = zone_of(store)
    before_id = row_id(request.args.get("before"))
    page = audit.search(db.session, store_ids=store_ids, before_id=before_id, limit=PAGE_SIZE,
                        **_read_filters(form, store_ids, zone))
    query = _filters_query()
    return render_page(
        TEMPLATE, "results", form=form, admin=admin, store=store, zone=zone, page=page,
        older_url=url_for("manage.show_audit_log", **query, before=page.entries[-1].id) if page.older else None,
        newest_url=url_for("manage.show_audit_log", **query) if before_id else None, changes=changes,
        local_time=local_time, action_label=action_label, role_label=role_label, by_member=by_member, complaint_link=_complaint_link,
        htmx=is_htmx(),
    )


def _complaint_link(entry: AuditLog) -> str | None:
    """The complaint an entry is about, if the reader may open it."""
    kind, _sep, number = (entry.target or "").partition(":")
    if kind != "complaint" or not entry.action.startswith("complaint.") or row_id(number) is None:
        return None
    return url_for("manage.show_complaint", complaint_id=int(number)) if in_scope(entry.store_id) else None

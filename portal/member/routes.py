"""The member's own pages, phone first. Every route takes the member from the signed-in session,
never from the URL or a form, so no member can reach another's data."""
from __future__ import annotations

import json
from datetime import timedelta

import segno
from flask import abort, current_app, g, redirect, request, session, url_for
from flask_babel import format_datetime
from flask_babel import gettext as _
from flask_login import current_user, logout_user
from markupsafe import Markup
from sqlalchemy import select
from wtforms import SelectChoice

from .. import accounts, audit, complaints, ledger, messaging, tiers
from .. import inbox as inbox_service
from ..access import access
from ..auth import guard
from ..extensions import db
from ..models import Complaint, ComplaintEvent, LedgerEntry, Member, Message, Purchase, Return, Store, TierChange
from ..money import format_yuan
from ..web import is_htmx, now, render_page, rules
from . import bp
from .forms import (
    DeleteForm,
    MemberComplaintForm,
    PasswordForm,
    ProfileForm,
    ReopenForm,
    VisitRatingForm,
)

PAGE_SIZE = 20
HISTORY_VIEWS = ("points", "purchases", "tiers")


def me() -> Member:
    """The signed-in member, and only ever them."""
    if not isinstance(current_user, Member):  # @access("member") already refuses anyone else
        abort(403)
    return current_user


@bp.context_processor
def _inbox_badge():
    """The nav's unread count, counted only when a page shows the nav, and once a request."""
    def inbox_unread() -> int:
        if "inbox_unread" not in g:
            g.inbox_unread = (inbox_service.unread_count(db.session, current_user.id)
                              if isinstance(current_user, Member) else 0)
        return g.inbox_unread

    return {"inbox_unread": inbox_unread}


@bp.route("/")
@access("member")
def home():
    """Points, what expires soon, the tier and what the next one needs, discount and benefits."""
    member, moment, current_rules = me(), now(), rules()
    levels = tiers.all_tiers(db.session)
    spend = tiers.qualifying_spend(db.session, member.id, moment, current_rules.qualifying_days)
    recent = db.session.scalars(
        select(LedgerEntry).where(LedgerEntry.member_id == member.id).order_by(LedgerEntry.id.desc()).limit(5)
    ).all()
    points_outlook = ledger.outlook(db.session, member, moment, days=30)
    return render_page(
        "member/home.html", member=member,
        usable_points=points_outlook.available,
        # a lot expiring at midnight can be used until the end of the day before: show that day
        expiring=[(when - timedelta(seconds=1), points) for when, points in points_outlook.expiring_lots],
        progress=tiers.progress(levels, member.tier, spend),
        keeping=tiers.keeping(levels, member, spend, current_rules.tier_retention_days),
        recent=recent, rules=current_rules,
        visit=complaints.unrated_visit(db.session, member, moment), rating_form=VisitRatingForm(formdata=None),
    )


@bp.route("/card")
@access("member")
def card():
    """The membership card: the card number and a QR code of it, for the till's scanner."""
    member = me()
    qr = segno.make_qr(member.card_number, error="m")
    svg = qr.svg_inline(scale=1, border=4, dark="#000", light="#fff", omitsize=True, svgclass="qr",
                        lineclass=None, title=_("Membership card %(card)s", card=member.card_number))
    # Safe to mark as markup: segno writes only its own path data and the escaped title, and the card
    # number it encodes is ten digits the portal generated.
    return render_page("member/card.html", member=member, qr_svg=Markup(svg))


def _before() -> int | None:
    value = request.args.get("before", "")
    return int(value) if value.isascii() and value.isdigit() and 0 < int(value) < 2**31 else None


@bp.route("/history")
@access("member")
def history():
    """Every points movement with its reason, purchases with their returns, and tier changes.

    Paged by id (newest first), so a long history costs the same as a short one; htmx asks for
    the next page's rows alone."""
    member = me()
    view = request.args.get("show", "points")
    if view not in HISTORY_VIEWS:
        view = "points"
    before = _before()
    rows: list = []
    returns_by_purchase: dict[int, list[Return]] = {}
    if view == "points":
        query = select(LedgerEntry).where(LedgerEntry.member_id == member.id)
        if before:
            query = query.where(LedgerEntry.id < before)
        rows = db.session.scalars(query.order_by(LedgerEntry.id.desc()).limit(PAGE_SIZE + 1)).all()
    elif view == "purchases":
        query = select(Purchase).where(Purchase.member_id == member.id)
        if before:
            query = query.where(Purchase.id < before)
        rows = db.session.scalars(query.order_by(Purchase.id.desc()).limit(PAGE_SIZE + 1)).all()
        ids = [purchase.id for purchase in rows[:PAGE_SIZE]]
        for ret in db.session.scalars(select(Return).where(Return.purchase_id.in_(ids)).order_by(Return.id)):
            returns_by_purchase.setdefault(ret.purchase_id, []).append(ret)
    else:
        rows = db.session.scalars(
            select(TierChange).where(TierChange.member_id == member.id).order_by(TierChange.id.desc())
        ).all()
    more = view != "tiers" and len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE] if view != "tiers" else rows
    return render_page(
        "member/history.html", "rows" if before else None, member=member, view=view, rows=rows,
        returns_by_purchase=returns_by_purchase, next_before=rows[-1].id if more else None,
    )



# --- the inbox ------------------------------------------------------------------------------------------

@bp.route("/inbox")
@access("member")
def inbox():
    """The member's messages that reached the inbox, newest first, unread ones marked.

    Paged like the history: htmx asks for the next page's rows alone."""
    member = me()
    before = _before()
    items, next_before = inbox_service.page(db.session, member.id, before=before)
    return render_page("member/inbox.html", "rows" if before else None, member=member, items=items,
                       next_before=next_before)


def _my_message(message_id: int) -> inbox_service.InboxItem:
    """One message of the signed-in member's inbox; another member's, or one not delivered, is a 404."""
    item = inbox_service.find(db.session, me().id, message_id)
    if item is None:
        abort(404)
    return item


def unsubscribe_link(message: Message) -> str:
    """The one-tap unsubscribe address of a marketing message: the same token as in its e-mail or SMS
    (senders.unsubscribe_url), on this site's own address, which PORTAL_BASE_URL need not be set for."""
    return url_for("main.unsubscribe",
                   token=messaging.unsubscribe_token(message.id, current_app.config["SECRET_KEY"]))


@bp.route("/inbox/<id:message_id>")
@access("member")
def show_message(message_id: int):
    """One message: subject, body and when it arrived.

    Reading it does not write: an unread message's page asks, once loaded, for the small POST that marks it
    read (a GET stays read-only, so it never takes the write lock, and a prefetch marks nothing)."""
    item = _my_message(message_id)
    return render_page("member/inbox_message.html", member=me(), item=item,
                       unsubscribe=unsubscribe_link(item.message) if item.message.kind == "marketing" else None)


@bp.route("/inbox/<id:message_id>/read", methods=["POST"])
@access("member")
def mark_message_read(message_id: int):
    """Mark a message read (again is harmless); htmx gets the nav's new unread count to swap in."""
    member = me()
    _my_message(message_id)
    inbox_service.mark_read(db.session, member.id, message_id, now=now())
    db.session.commit()
    if is_htmx():
        return render_page("member/_inbox_badge.html", unread=inbox_service.unread_count(db.session, member.id),
                           oob=True)
    return redirect(url_for("member.show_message", message_id=message_id), code=303)

def _profile_page(status: int = 200, form: ProfileForm | None = None, password_form: PasswordForm | None = None,
                  saved: str | None = None):
    member = me()
    if form is None:
        form = ProfileForm(guardian_age=rules().guardian_age, obj=member, formdata=None)
        form.locale.data = member.locale or str(session.get("lang") or "zh")
    return render_page("member/profile.html", "profile", status=status, member=member, form=form,
                       password_form=password_form or PasswordForm(formdata=None), saved=saved)


@bp.route("/profile")
@access("member")
def profile():
    """Name, birthday, marketing consent, language, password."""
    return _profile_page(saved=request.args.get("saved"))


@bp.route("/profile", methods=["POST"])
@access("member")
def update_profile():
    """Save the member's own changes; the consent can be withdrawn as easily as it was given."""
    member = me()
    form = ProfileForm(guardian_age=rules().guardian_age)
    if form.validate_on_submit():
        change = accounts.ProfileChange(
            name=form.name.data, birthday=form.birthday.data, guardian_consent=form.guardian_consent.data,
            marketing_consent=form.marketing_consent.data, locale=form.locale.data,
        )
        try:
            accounts.update_profile(db.session, member, change, rules=rules(), now=now())
        except accounts.AccountError as error:
            db.session.rollback()
            getattr(form, error.field).errors = [error.message]
        else:
            db.session.commit()
            session["lang"] = member.locale
            return redirect(url_for("member.profile", saved="profile"), code=303)
    return _profile_page(422, form=form)


def _password_refused(member: Member, field) -> bool:
    """A signed-in member's password asked again counts against their account like a sign-in, so a stolen
    session cannot keep guessing it (their own phone is no exception here)."""
    message = guard.refusal(guard.member_account(member.phone), from_sign_in_page=False)
    if message is None:
        return False
    field.errors = [message]
    return True


def _wrong_password(member: Member) -> None:
    guard.failed(guard.member_account(member.phone))
    audit.record(db.session, "auth.password_failed", at=now(), target=f"member:{member.id}")
    db.session.commit()


@bp.route("/password", methods=["POST"])
@access("member")
def change_password():
    """A new password; every other login of the member ends."""
    member = me()
    form = PasswordForm()
    if form.validate_on_submit():
        if _password_refused(member, form.current_password):
            return _profile_page(429, password_form=form)
        try:
            accounts.change_password(db.session, member, current=form.current_password.data,
                                     new=form.password.data, keep_token=member.auth_token, now=now())
        except accounts.AccountError as error:
            db.session.rollback()
            getattr(form, error.field).errors = [error.message]
            if error.field == "current_password":
                _wrong_password(member)
        else:
            db.session.commit()
            return redirect(url_for("member.profile", saved="password"), code=303)
    return _profile_page(422, password_form=form)


@bp.route("/data")
@access("member")
def my_data():
    """Download everything held about me, or delete my account."""
    return render_page("member/data.html", member=me())


@bp.route("/data.json", methods=["POST"])
@access("member")
def download_data():
    """Everything the portal holds about the signed-in member, as a JSON file.

    A POST (from a button), because the export is written to the audit log."""
    member = me()
    moment = now()
    body = json.dumps(accounts.export(db.session, member, now=moment), ensure_ascii=False, indent=2)
    audit.record(db.session, "member.export", at=moment, target=f"member:{member.id}", ip=request.remote_addr)
    db.session.commit()
    response = current_app.response_class(body, mimetype="application/json")
    response.headers["Content-Disposition"] = f'attachment; filename="my-data-{member.card_number}.json"'
    return response


@bp.route("/delete")
@access("member")
def confirm_delete():
    """The confirmation step before deleting the account."""
    return render_page("member/delete.html", member=me(), form=DeleteForm(formdata=None))


@bp.route("/delete", methods=["POST"])
@access("member")
def delete_account():
    """Erase the member's personal data and end every login; the books stay, anonymised."""
    member = me()
    form = DeleteForm()
    if form.validate_on_submit():
        if _password_refused(member, form.password):
            return render_page("member/delete.html", status=429, member=member, form=form)
        if accounts.authenticate(db.session, member.phone, form.password.data) is None:
            form.password.errors = [_("This is not your password.")]
            _wrong_password(member)
        else:
            accounts.erase(db.session, member, now=now())
            db.session.commit()
            logout_user()
            session.clear()
            return redirect(url_for("auth.member_login", deleted=1), code=303)
    return render_page("member/delete.html", status=422, member=member, form=form)


# --- visit ratings and complaints -------------------------------------------------------------------------

def _my_purchase(purchase_id: int) -> Purchase:
    purchase = db.session.get(Purchase, purchase_id)
    if purchase is None or purchase.member_id != me().id:
        abort(404)
    return purchase


@bp.route("/visits/<id:purchase_id>/rating", methods=["POST"])
@access("member")
def rate_visit(purchase_id: int):
    """The one-tap rating of a visit (1-5, optional comment), once per purchase; 1 or 2 opens a follow-up."""
    purchase = _my_purchase(purchase_id)
    form = VisitRatingForm()
    error = None
    if form.validate_on_submit():
        try:
            complaints.rate_visit(db.session, member=me(), purchase=purchase, rating=int(form.rating.data),
                                  comment=form.comment.data, now=now())
        except complaints.ComplaintError as refusal:
            db.session.rollback()
            error = refusal.message
        else:
            db.session.commit()
            if is_htmx():
                return render_page("member/_visit_thanks.html", low=int(form.rating.data) <= 2)
            return redirect(url_for("member.home", rated=purchase.id), code=303)
    else:
        error = _("Choose from 1 to 5.")
    db.session.rollback()
    return render_page("member/_visit_thanks.html", status=422, error=error)


def _complaint_form(form: MemberComplaintForm | None = None) -> MemberComplaintForm:
    member = me()
    form = form or MemberComplaintForm(formdata=None)
    recent = db.session.scalars(
        select(Purchase).where(Purchase.member_id == member.id).order_by(Purchase.id.desc()).limit(20)
    ).all()
    form.purchase_id.choices = [SelectChoice("", _("No particular visit"))] + [
        SelectChoice(str(p.id),
                     f"{format_yuan(p.gross_fen)} · {format_datetime(p.created_at, 'short')} · {p.store.name}")
        for p in recent
    ]
    return form


@bp.route("/complaints")
@access("member")
def my_complaints():
    """The member's complaints and where each stands."""
    member = me()
    rows = db.session.scalars(
        select(Complaint).where(Complaint.member_id == member.id).order_by(Complaint.id.desc())
    ).all()
    return render_page("member/complaints.html", member=member, complaints=rows)


@bp.route("/complaints/new")
@access("member")
def new_complaint():
    """The complaint form; ?purchase= preselects one of the member's own visits."""
    form = _complaint_form()
    wanted = request.args.get("purchase", "")
    if wanted in {choice.value for choice in form.purchase_id.choices}:
        form.purchase_id.data = wanted
    return render_page("member/complaint_form.html", member=me(), form=form)


@bp.route("/complaints", methods=["POST"])
@access("member")
def file_complaint():
    """File a complaint from the phone, at the store of the visit it is about (else where they joined)."""
    member = me()
    form = _complaint_form(MemberComplaintForm())
    if form.validate_on_submit():
        purchase = _my_purchase(int(form.purchase_id.data)) if form.purchase_id.data else None
        store = purchase.store if purchase else db.session.get(Store, member.store_id)
        try:
            complaint = complaints.file_complaint(
                db.session, store=store, category=form.category.data, severity="normal",
                description=form.description.data, channel="member", member=member, purchase=purchase,
                idempotency_key=form.idempotency_key.data, now=now(), ip=request.remote_addr,
            )
        except complaints.ComplaintError as error:
            db.session.rollback()
            getattr(form, error.field or "description").errors = [error.message]
        else:
            db.session.commit()
            return redirect(url_for("member.show_complaint", complaint_id=complaint.id), code=303)
    db.session.rollback()
    return render_page("member/complaint_form.html", status=422, member=member, form=form)


def _my_complaint(complaint_id: int) -> Complaint:
    complaint = db.session.get(Complaint, complaint_id)
    if complaint is None or complaint.member_id != me().id:
        abort(404)
    return complaint


def _complaint_page(complaint: Complaint, status: int = 200, reopen_form: ReopenForm | None = None,
                    error: str | None = None):
    events = db.session.scalars(
        select(ComplaintEvent).where(ComplaintEvent.complaint_id == complaint.id,
                                     ComplaintEvent.visible_to_member.is_(True)).order_by(ComplaintEvent.id)
    ).all()
    return render_page(
        "member/complaint.html", "complaint", status=status, member=me(), complaint=complaint, events=events,
        can_reopen=complaints.can_reopen(complaint, rules(), now()), reopen_form=reopen_form or ReopenForm(),
        can_rate=complaint.status in ("resolved", "closed") and complaint.rating is None, error=error,
        reopen_days=rules().complaint_reopen_days,
    )


@bp.route("/complaints/<id:complaint_id>")
@access("member")
def show_complaint(complaint_id: int):
    """One complaint's timeline: the steps and the replies meant for the member."""
    return _complaint_page(_my_complaint(complaint_id))


@bp.route("/complaints/<id:complaint_id>/reopen", methods=["POST"])
@access("member")
def reopen_complaint(complaint_id: int):
    """Not solved after all: reopen within the days allowed after the resolution."""
    _my_complaint(complaint_id)
    complaint = complaints.lock(db.session, complaint_id)
    form = ReopenForm()
    if form.validate_on_submit():
        try:
            complaints.reopen(db.session, complaint, member=me(), body=form.body.data, rules=rules(), now=now(),
                              ip=request.remote_addr)
        except complaints.ComplaintError as error:
            db.session.rollback()
            return _complaint_page(_my_complaint(complaint_id), 422, form, error.message)
        db.session.commit()
        return redirect(url_for("member.show_complaint", complaint_id=complaint_id), code=303)
    db.session.rollback()
    return _complaint_page(_my_complaint(complaint_id), 422, form)


@bp.route("/complaints/<id:complaint_id>/rating", methods=["POST"])
@access("member")
def rate_complaint(complaint_id: int):
    """Rate how the complaint was resolved, 1 to 5, once."""
    _my_complaint(complaint_id)
    complaint = complaints.lock(db.session, complaint_id)
    value = request.form.get("rating", "")
    try:
        if not (value.isascii() and value.isdigit()):
            raise complaints.ComplaintError("rating", _("Choose from 1 to 5."), "invalid_rating")
        complaints.rate(db.session, complaint, member=me(), rating=int(value), now=now(), ip=request.remote_addr)
    except complaints.ComplaintError as error:
        db.session.rollback()
        return _complaint_page(_my_complaint(complaint_id), 422, error=error.message)
    db.session.commit()
    return redirect(url_for("member.show_complaint", complaint_id=complaint_id), code=303)

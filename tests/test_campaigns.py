"""Message templates and campaigns in the manager's console: templates checked field by field and previewed
with a real member's values; a campaign's audience (always with marketing consent), its random control group,
its messages queued in steps, the outbox, and its results against the control group, hand-computed.

Managers see their own store's campaigns (another store's is a 404); admins see all. Runs on SQLite and
PostgreSQL.
"""
from __future__ import annotations

import json
import uuid
import re
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from portal import campaigns, messaging
from portal.extensions import db
from portal.models import (
    AuditLog,
    Campaign,
    CampaignMember,
    Member,
    Message,
    MessageDelivery,
    MessageTemplate,
    Tier,
)
from portal.rules import load_rules

from . import factories
from .conftest import FIXED_NOW  # 12:00 in Shanghai: outside the quiet hours
from .helpers import audited_changes, field_error, figure, form_key, is_full_page, text_of

TEMPLATES = "/manage/messages/templates"
CAMPAIGNS = "/manage/messages"
DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def frozen(app):
    app.config["FROZEN_NOW"] = FIXED_NOW


# --- helpers --------------------------------------------------------------------------------------------

def count(model, *where) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def template_id(code: str) -> int:
    return db.session.scalars(select(MessageTemplate.id).where(MessageTemplate.code == code)).one()


def consenting(n: int = 1, *, store_code: str = "S001", **kwargs) -> list[Member]:
    """n members with marketing consent, registered a year before the frozen clock."""
    made = []
    for _ in range(n):
        member = factories.member(store_code=store_code, now=FIXED_NOW - 365 * DAY, **kwargs)
        member.marketing_consent = True
        made.append(member)
    db.session.flush()
    return made


def campaign_form(client, **fields) -> dict:
    """A new-campaign form as the page gives it, with the fields changed."""
    page = client.get(f"{CAMPAIGNS}/new")
    with client.application.app_context():
        birthday = template_id("birthday")
    data = {"idempotency_key": form_key(page), "name": "Summer offer", "template_id": str(birthday),
            "tier": "", "segment": "", "birthday_month": "", "when": "now", "send_at": "", "control_percent": "10"}
    data.update(fields)
    return data


def create(client, **fields):
    return client.post(CAMPAIGNS, data=campaign_form(client, **fields))


def campaign_id_of(response) -> int:
    assert response.status_code == 303, text_of(response)
    return int(re.search(r"/manage/messages/(\d+)$", response.headers["Location"]).group(1))


def run_steps(client, campaign_id: int) -> None:
    """Post the queuing steps as the page's progress block does, until every message is queued."""
    for _ in range(100):
        with client.application.app_context():
            campaign = db.session.get(Campaign, campaign_id)
            if campaign.queued_at is not None:
                return
            offset = campaigns.prepared_of(campaign)
        response = client.post(f"{CAMPAIGNS}/{campaign_id}/step", data={"offset": offset}, htmx=True)
        assert response.status_code == 200
    raise AssertionError("the campaign never finished queuing")


def send_outbox(moment) -> messaging.OutboxRun:
    return messaging.send_due(db.session, now=moment, rules=load_rules(db.session),
                              senders={"inbox": messaging.deliver_to_inbox}, default_zone="Asia/Shanghai")


def groups(campaign_id: int) -> tuple[set[int], set[int]]:
    """(sent group, control group) member ids."""
    rows = db.session.execute(select(CampaignMember.member_id, CampaignMember.control)
                              .where(CampaignMember.campaign_id == campaign_id)).all()
    return {m for m, control in rows if not control}, {m for m, control in rows if control}


# --- templates ------------------------------------------------------------------------------------------

def test_the_templates_list_shows_the_standard_ones_with_kind_and_last_change(app, client, login):
    login(client, "manager")
    response = client.get(TEMPLATES)
    assert response.status_code == 200
    page = text_of(response)
    for name in ("Activation code", "Points about to expire", "Tier change", "Reply to a complaint",
                 "Birthday greeting"):
        assert name in page
    assert "Service (every member)" in page and "Marketing (with consent only)" in page
    assert "Archive</button>" not in page  # standard templates cannot be archived


def template_data(**fields) -> dict:
    data = {"name": "Mid-autumn offer", "subject_zh": "中秋快乐", "body_zh": "{name}，您好！中秋双倍积分。",
            "subject_en": "Happy Mid-autumn", "body_en": "Hello {name}, double points at {store} this week.",
            "preview_member": ""}
    data.update(fields)
    return data


def test_a_manager_creates_a_marketing_template_coded_from_its_id_and_it_is_audited(app, client, login):
    login(client, "manager")
    assert client.get(f"{TEMPLATES}/new").status_code == 200
    response = client.post(TEMPLATES, data=template_data())
    assert response.status_code == 303
    with app.app_context():
        template = db.session.scalars(select(MessageTemplate).where(MessageTemplate.name == "Mid-autumn offer")).one()
        assert (template.kind, template.code) == ("marketing", f"marketing_{template.id}")
        assert response.headers["Location"].startswith(f"{TEMPLATES}/{template.id}")
        entry = db.session.scalars(select(AuditLog).where(AuditLog.action == "template.create")).one()
        assert json.loads(entry.after)["body_en"] == "Hello {name}, double points at {store} this week."
    page = client.get(response.headers["Location"])
    assert "The template is saved." in text_of(page)
    listing = text_of(client.get(TEMPLATES))
    assert "Mid-autumn offer" in listing and f"marketing_{template.id}" in listing


def test_the_same_new_template_form_sent_twice_creates_one_template(app, client, login):
    login(client, "manager")
    key = uuid.uuid4().hex
    first = client.post(TEMPLATES, data=template_data(idempotency_key=key))
    again = client.post(TEMPLATES, data=template_data(idempotency_key=key))
    assert first.status_code == again.status_code == 303
    assert first.headers["Location"] == again.headers["Location"]
    with app.app_context():
        assert len(db.session.scalars(select(MessageTemplate).where(MessageTemplate.name == "Mid-autumn offer")).all()) == 1


@pytest.mark.parametrize(("field", "value", "field_id", "message"), [
    ("name", "  ", "template-name", "Name the template."),
    ("subject_zh", "", "template-subject-zh", "Write the text."),
    ("body_zh", "您好 {nmae}", "template-body-zh", "There is no placeholder {nmae}. Use: {name}, {tier}, {balance}, "
                                                 "{expiring_points}, {expiry_date}, {store}."),
    ("subject_en", "x" * 201, "template-subject-en", "Use at most 200 characters."),
    ("body_en", "Your code is {code}", "template-body-en", "There is no placeholder {code}."),
    ("body_en", "Hello {name", "template-body-en", "A brace is not closed."),
    ("body_en", "Hello {name!r}", "template-body-en", "Write placeholders as a plain name in braces"),
])
def test_a_template_refusal_is_shown_beside_its_field_and_nothing_is_saved(app, client, login, field, value,
                                                                           field_id, message):
    login(client, "manager")
    with app.app_context():
        before = count(MessageTemplate)
    response = client.post(TEMPLATES, data=template_data(**{field: value}))
    assert response.status_code == 422
    assert message in (field_error(response, field_id) or "")
    with app.app_context():
        assert count(MessageTemplate) == before and count(AuditLog, audited_changes()) == 0


def test_every_refused_field_shows_its_own_error_at_once(app, client, login):
    login(client, "manager")
    response = client.post(TEMPLATES, data=template_data(body_zh="{x}", body_en="{y}"))
    assert response.status_code == 422
    assert "{x}" in field_error(response, "template-body-zh") and "{y}" in field_error(response, "template-body-en")


def test_the_placeholders_and_their_meaning_are_shown_beside_the_form(app, client, login):
    login(client, "manager")
    page = text_of(client.get(f"{TEMPLATES}/new"))
    assert "{balance}" in page and "their points balance" in page
    assert "<code>{code}</code>" not in page  # only the activation template has it
    with app.app_context():
        activation = template_id("activation")
    assert "<code>{code}</code>" in text_of(client.get(f"{TEMPLATES}/{activation}"))


def test_rewording_a_standard_template_keeps_its_code_and_kind_and_audits_before_and_after(app, client, login):
    login(client, "admin")
    with app.app_context():
        activation = template_id("activation")
        template = db.session.get(MessageTemplate, activation)
        fields = {name: getattr(template, name) for name in ("name", "subject_zh", "body_zh", "subject_en")}
    response = client.post(f"{TEMPLATES}/{activation}",
                           data={**fields, "body_en": "Your code: {code}. Welcome, {name}!", "preview_member": ""})
    assert response.status_code == 303
    with app.app_context():
        template = db.session.get(MessageTemplate, activation)
        assert (template.code, template.kind, template.body_en) == ("activation", "service",
                                                                    "Your code: {code}. Welcome, {name}!")
        entry = db.session.scalars(select(AuditLog).where(AuditLog.action == "template.update")).one()
        assert json.loads(entry.before) == {"body_en": "Hello {name}, your activation code is {code}. It is valid "
                                                        "for 30 minutes. Do not share it."}
        assert json.loads(entry.after) == {"body_en": "Your code: {code}. Welcome, {name}!"}
        assert entry.target == f"template:{activation}"


def test_a_preview_shows_a_real_members_values_in_both_languages_and_saves_nothing(app, client, login):
    login(client, "manager")
    with app.app_context():
        member = factories.member(name="Li Lei", now=FIXED_NOW - 10 * DAY)
        factories.purchase(member, 50_000, now=FIXED_NOW - 5 * DAY)
        factories.member(name="Newest Member", now=FIXED_NOW - DAY)
        db.session.commit()
        card, phone = member.card_number, member.phone
        birthday = template_id("birthday")
        stored = db.session.get(MessageTemplate, birthday).body_en
    texts = template_data(name="Birthday greeting", body_en="Hi {name}, {balance} points, tier {tier}.",
                          subject_en="For {name}")
    for typed in (card, phone[3:]):
        response = client.post(f"{TEMPLATES}/preview?template={birthday}", data={**texts, "preview_member": typed},
                               htmx=True)
        assert response.status_code == 200 and not is_full_page(response)
        assert figure(response, "preview-body-en") == "Hi Li Lei, 500 points, tier Member."
        assert figure(response, "preview-subject-en") == "For Li Lei"
        assert figure(response, "preview-body-zh") == "Li Lei，您好！中秋双倍积分。"
    newest = client.post(f"{TEMPLATES}/preview?template={birthday}", data=texts)
    assert newest.status_code == 200 and is_full_page(newest)
    assert figure(newest, "preview-body-en") == "Hi Newest Member, 0 points, tier Member."
    with app.app_context():
        assert db.session.get(MessageTemplate, birthday).body_en == stored
        assert count(AuditLog, AuditLog.action.startswith("template")) == 0


def test_a_preview_refuses_an_unknown_placeholder_beside_the_field(app, client, login):
    login(client, "manager")
    with app.app_context():
        factories.member()
        db.session.commit()
    response = client.post(f"{TEMPLATES}/preview", data=template_data(body_en="Hi {nmae}"), htmx=True)
    assert response.status_code == 422 and not is_full_page(response)
    assert "{nmae}" in field_error(response, "template-body-en")


def test_a_manager_previews_only_with_their_own_stores_members(app, client, login):
    login(client, "manager")
    with app.app_context():
        other = factories.member(store_code="S002")
        db.session.commit()
        card = other.card_number
    response = client.post(f"{TEMPLATES}/preview", data=template_data(preview_member=card), htmx=True)
    assert response.status_code == 422
    assert field_error(response, "template-preview-member") == "No member of yours has this card number or phone."


def test_a_custom_template_is_archived_and_no_longer_offered_but_a_standard_one_is_not(app, client, login):
    login(client, "manager")
    client.post(TEMPLATES, data=template_data())
    with app.app_context():
        custom = db.session.scalars(select(MessageTemplate.id).where(MessageTemplate.name == "Mid-autumn offer")).one()
        birthday = template_id("birthday")
    offered = f'<option value="{custom}">Mid-autumn offer</option>'
    assert offered in client.get(f"{CAMPAIGNS}/new").get_data(as_text=True)
    assert client.post(f"{TEMPLATES}/{custom}/archive").status_code == 303
    assert offered not in client.get(f"{CAMPAIGNS}/new").get_data(as_text=True)
    assert client.post(f"{TEMPLATES}/{birthday}/archive").status_code == 409
    with app.app_context():
        assert db.session.get(MessageTemplate, birthday).archived_at is None
        assert count(AuditLog, AuditLog.action == "template.archive") == 1


# --- the audience ---------------------------------------------------------------------------------------

@pytest.fixture
def population(app):
    """Members of several kinds; the audience filters pick among them. Returns names -> ids."""
    with app.app_context():
        silver = db.session.scalars(select(Tier).where(Tier.code == "silver")).one()
        plain, = consenting()
        silver_member, = consenting()
        silver_member.tier = silver
        march, = consenting()
        march.birthday = date(1990, 3, 25)
        at_risk, = consenting()
        for days in (200, 150):
            factories.purchase(at_risk, 10_000, now=FIXED_NOW - days * DAY)
        loyal, = consenting()
        for days in (20, 10):
            factories.purchase(loyal, 10_000, now=FIXED_NOW - days * DAY)
        no_consent = factories.member(now=FIXED_NOW - 365 * DAY)
        no_consent.birthday = date(1991, 3, 2)
        elsewhere, = consenting(store_code="S002")
        erased, = consenting()
        erased.deleted_at = FIXED_NOW - DAY
        db.session.commit()
        return {"plain": plain.id, "silver": silver_member.id, "march": march.id, "at_risk": at_risk.id,
                "loyal": loyal.id, "no_consent": no_consent.id, "elsewhere": elsewhere.id, "erased": erased.id,
                "silver_tier": silver.id}


@pytest.mark.parametrize(("filters", "expected"), [
    ({}, {"plain", "silver", "march", "at_risk", "loyal"}),
    ({"tier": "silver_tier"}, {"silver"}),
    ({"birthday_month": 3}, {"march"}),
    ({"at_risk": True}, {"at_risk"}),
    ({"segment": "loyal"}, {"loyal"}),
    ({"segment": "hibernating"}, {"plain", "silver", "march"}),
    ({"segment": "loyal", "at_risk": True}, set()),
])
def test_the_audience_holds_the_members_with_consent_that_match_every_filter(app, population, filters, expected):
    with app.app_context():
        store_id = factories.store("S001").id
        audience = campaigns.Audience(
            tier_id=population[filters["tier"]] if "tier" in filters else None, store_id=store_id,
            segment=filters.get("segment"), at_risk=filters.get("at_risk", False),
            birthday_month=filters.get("birthday_month"))
        ids = set(db.session.scalars(campaigns.audience_query(audience, now=FIXED_NOW)))
        assert ids == {population[name] for name in expected}
        assert campaigns.audience_size(db.session, audience, now=FIXED_NOW) == len(expected)


def test_an_admin_may_send_to_every_store(app, population):
    with app.app_context():
        ids = set(db.session.scalars(campaigns.audience_query(campaigns.Audience(), now=FIXED_NOW)))
    assert ids == {population[name] for name in ("plain", "silver", "march", "at_risk", "loyal", "elsewhere")}


def test_the_audience_size_and_a_preview_follow_the_form(app, client, login, population):
    login(client, "manager")
    page = client.get(f"{CAMPAIGNS}/new")
    assert figure(page, "audience-size") == "5"
    assert "marketing consent is always “given”" in text_of(page)
    data = campaign_form(client, birthday_month="3")
    response = client.post(f"{CAMPAIGNS}/new/audience", data=data, htmx=True)
    assert response.status_code == 200 and not is_full_page(response)
    assert figure(response, "audience-size") == "1"
    assert figure(response, "preview-subject-en") == "Happy birthday!"
    assert figure(response, "preview-body-zh").startswith("王小明，祝您生日快乐！Test Store")
    full = client.post(f"{CAMPAIGNS}/new/audience", data=campaign_form(client, segment="loyal"))
    assert full.status_code == 200 and is_full_page(full) and figure(full, "audience-size") == "1"
    with app.app_context():
        assert count(Campaign) == 0


def test_a_manager_cannot_reach_another_stores_members_with_the_store_field(app, client, login, population):
    login(client, "manager")
    with app.app_context():
        other = factories.store("S002").id
    response = client.post(f"{CAMPAIGNS}/new/audience", data=campaign_form(client, store=str(other)), htmx=True)
    assert figure(response, "audience-size") == "5"


# --- creating a campaign --------------------------------------------------------------------------------

def test_creating_a_campaign_freezes_the_audience_with_consent_only_and_queues_the_sent_group(app, client, login,
                                                                                              population):
    login(client, "manager")
    response = create(client, control_percent="20")
    campaign_id = campaign_id_of(response)
    with app.app_context():
        campaign = db.session.get(Campaign, campaign_id)
        assert (campaign.audience_size, campaign.control_size, campaign.cancelled_at) == (5, 1, None)
        sent, control = groups(campaign_id)
        assert sent | control == {population[name] for name in ("plain", "silver", "march", "at_risk", "loyal")}
        assert population["no_consent"] not in sent | control
        assert count(Message) == 0  # the page's steps queue them
        entry = db.session.scalars(select(AuditLog).where(AuditLog.action == "campaign.create")).one()
        assert json.loads(entry.after)["audience_size"] == 5
    page = client.get(response.headers["Location"])
    assert figure(page, "status") == "Queuing the messages"
    assert 'hx-post="/manage/messages/%d/step"' % campaign_id in page.get_data(as_text=True)
    run_steps(client, campaign_id)
    with app.app_context():
        messages = list(db.session.scalars(select(Message).where(Message.campaign_id == campaign_id)))
        assert {message.member_id for message in messages} == sent
        assert all(m.dedupe_key == f"campaign:{campaign_id}:{m.member_id}" and m.kind == "marketing"
                   and m.not_before == FIXED_NOW and m.purpose == "campaign" for m in messages)
        assert count(MessageDelivery) == 4
    page = client.get(f"{CAMPAIGNS}/{campaign_id}")
    assert figure(page, "status") == "Sending"
    assert (figure(page, "sent"), figure(page, "queued")) == ("0", "4")
    assert 'hx-get="/manage/messages/%d"' % campaign_id in page.get_data(as_text=True)  # polls while queued


def test_a_campaign_form_sent_twice_creates_one_campaign(app, client, login, population):
    login(client, "manager")
    data = campaign_form(client)
    first, second = client.post(CAMPAIGNS, data=data), client.post(CAMPAIGNS, data=data)
    assert campaign_id_of(first) == campaign_id_of(second)
    with app.app_context():
        assert count(Campaign) == 1 and count(CampaignMember) == 5


@pytest.mark.parametrize(("fields", "field_id", "message"), [
    ({"name": ""}, "campaign-name", "Name the campaign."),
    ({"template_id": ""}, "campaign-template", "Choose a marketing template."),
    ({"template_id": "activation"}, "campaign-template", "Choose a marketing template."),
    ({"control_percent": "51"}, "campaign-control", "Enter a whole number from 0 to 50."),
    ({"control_percent": "ten"}, "campaign-control", "Enter a whole number from 0 to 50."),
    ({"when": "later", "send_at": "tomorrow"}, "campaign-send-at", "Enter a date and time such as 2026-06-20 10:00."),
    ({"when": "later", "send_at": "2026-06-14T10:00"}, "campaign-send-at", "Choose a time from now on."),
])
def test_a_refused_campaign_shows_why_beside_the_field_and_creates_nothing(app, client, login, population, fields,
                                                                          field_id, message):
    login(client, "manager")
    if fields.get("template_id") == "activation":
        with app.app_context():
            fields["template_id"] = str(template_id("activation"))
    response = create(client, **fields)
    assert response.status_code == 422
    assert field_error(response, field_id) == message
    with app.app_context():
        assert count(Campaign) == 0 and count(CampaignMember) == 0


def test_an_empty_audience_is_refused(app, client, login, population):
    login(client, "manager")
    response = create(client, segment="champions")
    assert response.status_code == 422
    assert "No member with marketing consent matches these filters." in text_of(response)
    with app.app_context():
        assert count(Campaign) == 0


def test_a_later_send_time_is_read_in_the_stores_time_and_the_outbox_waits_for_it(app, client, login, population):
    login(client, "manager")
    campaign_id = campaign_id_of(create(client, when="later", send_at="2026-06-16T10:30", control_percent="0"))
    run_steps(client, campaign_id)
    with app.app_context():
        send_at = db.session.get(Campaign, campaign_id).send_at
        assert send_at == datetime(2026, 6, 16, 2, 30, tzinfo=FIXED_NOW.tzinfo)
        assert send_outbox(FIXED_NOW).sent == 0
        assert count(MessageDelivery, MessageDelivery.status == "queued") == 5
    page = client.get(f"{CAMPAIGNS}/{campaign_id}")
    assert figure(page, "status") == "Waiting for the send time"
    with app.app_context():
        assert send_outbox(send_at).sent == 5
    app.config["FROZEN_NOW"] = send_at + timedelta(minutes=5)
    page = client.get(f"{CAMPAIGNS}/{campaign_id}")
    assert (figure(page, "status"), figure(page, "delivered")) == ("Sent", "5")
    assert 'hx-trigger="load' not in page.get_data(as_text=True)  # nothing left to poll for


# --- the control group ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("size", "percent", "control"), [(40, 10, 4), (10, 25, 3), (7, 10, 1), (5, 0, 0),
                                                           (3, 50, 2), (20, 50, 10)])
def test_the_control_group_is_exactly_size_times_percent_rounded_half_up(app, client, login, size, percent, control):
    login(client, "manager")
    with app.app_context():
        consenting(size)
        db.session.commit()
    campaign_id = campaign_id_of(create(client, control_percent=str(percent)))
    run_steps(client, campaign_id)
    with app.app_context():
        sent, held = groups(campaign_id)
        assert (len(sent), len(held)) == (size - control, control)
        assert {m for m in db.session.scalars(select(Message.member_id))} == sent  # no message for the control group


def test_the_control_group_is_random_for_each_campaign_and_stable_for_one(app, client, login):
    login(client, "manager")
    with app.app_context():
        consenting(40)
        db.session.commit()
    first = campaign_id_of(create(client, name="First"))
    second = campaign_id_of(create(client, name="Second"))
    with app.app_context():
        control_first, control_second = groups(first)[1], groups(second)[1]
        assert len(control_first) == len(control_second) == 4
        assert control_first != control_second  # 1 chance in 91,390 of a false failure
        campaign = db.session.get(Campaign, first)
        seeds = {campaigns.seed_of(campaign), campaigns.seed_of(db.session.get(Campaign, second))}
        assert len(seeds) == 2
        everyone = list(groups(first)[0] | control_first)
        assert set(campaigns.control_ids(everyone, 10, campaigns.seed_of(campaign))) == control_first
        assert set(campaigns.control_ids(list(reversed(everyone)), 10, campaigns.seed_of(campaign))) == control_first


# --- steps ----------------------------------------------------------------------------------------------

def test_steps_queue_a_slice_each_and_a_step_sent_twice_queues_nothing_twice(app, client, login, monkeypatch):
    monkeypatch.setattr(campaigns, "STEP_MEMBERS", 3)
    login(client, "manager")
    with app.app_context():
        consenting(7)
        db.session.commit()
    campaign_id = campaign_id_of(create(client, control_percent="0"))
    step = f"{CAMPAIGNS}/{campaign_id}/step"

    def queued() -> int:
        with app.app_context():
            return count(Message, Message.campaign_id == campaign_id)

    response = client.post(step, data={"offset": 0}, htmx=True)
    assert response.status_code == 200 and not is_full_page(response)
    assert (figure(response, "prepared"), figure(response, "to-prepare")) == ("3", "7")
    assert queued() == 3
    assert client.post(step, data={"offset": 0}, htmx=True).status_code == 200  # the same poll fired twice
    assert queued() == 3
    plain = client.post(step, data={"offset": 3})
    assert plain.status_code == 303 and plain.headers["Location"] == f"{CAMPAIGNS}/{campaign_id}"
    assert queued() == 6
    last = client.post(step, data={"offset": 6}, htmx=True)
    assert queued() == 7 and figure(last, "status") == "Sending"
    assert client.post(step, data={"offset": 7}, htmx=True).status_code == 200
    assert queued() == 7
    with app.app_context():
        assert count(MessageDelivery) == 7


def test_a_member_who_withdrew_consent_before_the_step_gets_no_message(app, client, login):
    login(client, "manager")
    with app.app_context():
        members = [member.id for member in consenting(3)]
        db.session.commit()
        changed_mind = members[0]
    campaign_id = campaign_id_of(create(client, control_percent="0"))
    with app.app_context():
        db.session.get(Member, changed_mind).marketing_consent = False
        db.session.commit()
    run_steps(client, campaign_id)
    with app.app_context():
        assert set(db.session.scalars(select(Message.member_id))) == set(members[1:])


# --- cancelling -----------------------------------------------------------------------------------------

def test_cancelling_stops_what_is_queued_and_a_finished_campaign_cannot_be_cancelled(app, client, login):
    login(client, "manager")
    with app.app_context():
        consenting(4)
        db.session.commit()
    campaign_id = campaign_id_of(create(client, control_percent="0", when="later", send_at="2026-06-20T10:00"))
    run_steps(client, campaign_id)
    response = client.post(f"{CAMPAIGNS}/{campaign_id}/cancel", htmx=True)
    assert response.status_code == 200 and figure(response, "status") == "Cancelled"
    with app.app_context():
        assert count(MessageDelivery, MessageDelivery.status == "cancelled",
                     MessageDelivery.last_error == "campaign cancelled") == 4
        assert send_outbox(datetime(2026, 6, 20, 3, 0, tzinfo=FIXED_NOW.tzinfo)).sent == 0
    again = client.post(f"{CAMPAIGNS}/{campaign_id}/cancel")
    assert again.status_code == 422 and "already cancelled" in text_of(again)

    done_id = campaign_id_of(create(client, control_percent="0", name="Now"))
    run_steps(client, done_id)
    with app.app_context():
        send_outbox(FIXED_NOW)
    refused = client.post(f"{CAMPAIGNS}/{done_id}/cancel", htmx=True)
    assert refused.status_code == 422 and "nothing left to cancel" in text_of(refused)
    with app.app_context():
        assert db.session.get(Campaign, done_id).cancelled_at is None


# --- results --------------------------------------------------------------------------------------------

def test_results_against_hand_computed_figures(app, client, login):
    """10 sent and 10 held back; 4 of the sent buy within 14 days (another only on day 15), 1 held back buys."""
    login(client, "manager")
    with app.app_context():
        consenting(20)
        db.session.commit()
    campaign_id = campaign_id_of(create(client, control_percent="50"))
    run_steps(client, campaign_id)
    with app.app_context():
        assert send_outbox(FIXED_NOW).sent == 10
        sent, control = (sorted(group) for group in groups(campaign_id))
        assert (len(sent), len(control)) == (10, 10)
        member = lambda member_id: db.session.get(Member, member_id)  # noqa: E731
        factories.purchase(member(sent[0]), 10_000, now=FIXED_NOW + timedelta(hours=1))
        factories.purchase(member(sent[0]), 5_000, now=FIXED_NOW + 3 * DAY)
        factories.purchase(member(sent[1]), 20_000, now=FIXED_NOW + 7 * DAY)
        factories.purchase(member(sent[2]), 3_050, now=FIXED_NOW + 13 * DAY)
        factories.purchase(member(sent[3]), 1_000, now=FIXED_NOW + 14 * DAY - timedelta(minutes=1))
        factories.purchase(member(sent[4]), 99_900, now=FIXED_NOW + 14 * DAY + timedelta(hours=2))  # day 15
        factories.purchase(member(sent[5]), 7_700, now=FIXED_NOW - DAY)  # before the send time
        factories.purchase(member(control[0]), 8_000, now=FIXED_NOW + 2 * DAY)
        messages = {m.member_id: m for m in db.session.scalars(select(Message).where(Message.campaign_id == campaign_id))}
        messages[sent[0]].read_at = FIXED_NOW + DAY
        messages[sent[1]].read_at = FIXED_NOW + DAY
        messaging.unsubscribe(db.session, messages[sent[2]], now=FIXED_NOW + DAY)
        db.session.commit()
    app.config["FROZEN_NOW"] = FIXED_NOW + 20 * DAY
    page = client.get(f"{CAMPAIGNS}/{campaign_id}")
    assert figure(page, "status") == "Sent"
    expected = {
        "audience": "20", "control": "10", "messages": "10", "delivered": "10", "failed": "0", "held-cancelled": "0",
        "read": "2", "unsubscribed": "1",
        "sent-members": "10", "control-members": "10", "sent-buyers": "4", "control-buyers": "1",
        "sent-buyers-percent": "40.0%", "control-buyers-percent": "10.0%", "uplift": "+30.0",
        "sent-spend": "¥390.50", "control-spend": "¥80.00",
        "sent-spend-per-member": "¥39.05", "control-spend-per-member": "¥8.00",
    }
    assert {name: figure(page, name) for name in expected} == expected
    with app.app_context():
        result = campaigns.results(db.session, db.session.get(Campaign, campaign_id), now=FIXED_NOW + 20 * DAY)
        assert result.uplift_points == 30.0 and not result.window_open


def test_the_cap_and_withdrawn_consent_count_as_held_or_cancelled(app, client, login):
    login(client, "manager")
    with app.app_context():
        capped, withdrawn, fine = consenting(3)
        rules = load_rules(db.session)
        birthday = db.session.get(MessageTemplate, template_id("birthday"))
        for n in range(rules.marketing_monthly_cap):
            messaging.queue(db.session, member=capped, template=birthday, purpose="offer", now=FIXED_NOW - DAY,
                            channels=messaging.Channels(), dedupe_key=f"earlier:{n}")
        send_outbox(FIXED_NOW - DAY)
        db.session.commit()
        withdrawn_id = withdrawn.id
    campaign_id = campaign_id_of(create(client, control_percent="0"))
    run_steps(client, campaign_id)
    with app.app_context():
        messaging.withdraw_marketing(db.session, withdrawn_id, now=FIXED_NOW)
        db.session.commit()
        send_outbox(FIXED_NOW)
    page = client.get(f"{CAMPAIGNS}/{campaign_id}")
    assert (figure(page, "delivered"), figure(page, "held-cancelled")) == ("1", "2")
    row = re.sub(r"<[^>]+>", " ", re.search(r'<tr id="channel-inbox">(.*?)</tr>', text_of(page), re.S).group(1))
    assert row.split() == ["Inbox", "1", "0", "0", "0", "1", "1", "0"]


def test_results_wait_for_the_send_time(app, client, login):
    login(client, "manager")
    with app.app_context():
        consenting(2)
        db.session.commit()
    campaign_id = campaign_id_of(create(client, when="later", send_at="2026-06-18T10:00"))
    page = text_of(client.get(f"{CAMPAIGNS}/{campaign_id}"))
    assert "The results start at the send time." in page


# --- scope and roles ------------------------------------------------------------------------------------

def test_a_manager_sees_only_their_stores_campaigns_and_an_admin_sees_all(app, client, login):
    with app.app_context():
        consenting(2)
        consenting(2, store_code="S002")
        db.session.commit()
    login(client, "manager", store_code="S002")
    theirs = campaign_id_of(create(client, name="Second store offer"))
    client.post("/logout")
    login(client, "manager")
    ours = campaign_id_of(create(client, name="Our offer"))
    listing = text_of(client.get(CAMPAIGNS))
    assert "Our offer" in listing and "Second store offer" not in listing
    assert client.get(f"{CAMPAIGNS}/{theirs}").status_code == 404
    assert client.get(f"{CAMPAIGNS}/{theirs}", htmx=True).status_code == 404
    for action in ("step", "cancel"):
        assert client.post(f"{CAMPAIGNS}/{theirs}/{action}", data={"offset": 0}).status_code == 404
    with app.app_context():
        assert db.session.get(Campaign, ours).store_id == factories.store("S001").id
        assert count(Message, Message.campaign_id == theirs) == 0
    client.post("/logout")
    login(client, "admin")
    listing = text_of(client.get(CAMPAIGNS))
    assert "Our offer" in listing and "Second store offer" in listing
    everyone = campaign_id_of(create(client, name="Chain offer", control_percent="0"))
    with app.app_context():
        assert db.session.get(Campaign, everyone).store_id is None
        assert db.session.get(Campaign, everyone).audience_size == 4
    client.post("/logout")
    login(client, "manager")
    assert client.get(f"{CAMPAIGNS}/{everyone}").status_code == 404


@pytest.mark.parametrize(("method", "url"), [
    ("GET", CAMPAIGNS), ("GET", f"{CAMPAIGNS}/new"), ("POST", CAMPAIGNS), ("POST", f"{CAMPAIGNS}/new/audience"),
    ("GET", f"{CAMPAIGNS}/1"), ("POST", f"{CAMPAIGNS}/1/step"), ("POST", f"{CAMPAIGNS}/1/cancel"),
    ("GET", TEMPLATES), ("GET", f"{TEMPLATES}/new"), ("POST", TEMPLATES), ("GET", f"{TEMPLATES}/1"),
    ("POST", f"{TEMPLATES}/1"), ("POST", f"{TEMPLATES}/preview"), ("POST", f"{TEMPLATES}/1/archive"),
])
def test_a_cashier_gets_403(app, client, login, method, url):
    login(client, "cashier")
    assert client.open(url, method=method).status_code == 403


def test_the_console_menu_has_messages(app, client, login):
    login(client, "manager")
    page = client.get(f"{CAMPAIGNS}/new").get_data(as_text=True)
    assert re.search(r'<a href="/manage/messages" aria-current="page">Messages</a>', page)

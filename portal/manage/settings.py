"""Settings: the tiers and the rules (points, expiry, members, complaint time limits and fraud-signal
thresholds), which managers and admins set (they are the same for every store). Each change is validated,
audited with its before and after, and in force from the next transaction."""
from __future__ import annotations

import re

from flask import redirect, request, url_for
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from .. import rules as rules_service
from .. import tiers
from ..access import access
from ..extensions import db
from ..money import normalise_text
from ..web import now, render_page, rules
from . import bp

TEMPLATE = "manage/settings.html"
TIER_FIELDS = ("name_zh", "name_en", "threshold", "multiplier", "discount", "birthday_bonus")
RULE_LABELS = {
    "earn_rate_milli": _l("Points per ¥1 paid, in thousandths (1000 = 1 point)"),
    "redeem_points_per_yuan": _l("Points worth ¥1.00 when paying with points"),
    "redeem_minimum": _l("Fewest points used at a time"),
    "redeem_cap_percent": _l("Most of the amount due that points may pay, as a percentage"),
    "purchase_cap_fen": _l("Largest purchase, in fen"),
    "expiry_days": _l("Days before earned points expire (0 = never)"),
    "shortfall_policy": _l("When a return takes back points already spent"),
    "referral_bonus": _l("Referral bonus (points)"),
    "privacy_version": _l("Privacy notice version"),
    "guardian_age": _l("Age below which a guardian must agree"),
    "activation_minutes": _l("Minutes an activation code is valid"),
    "tier_retention_days": _l("Days a tier is kept once reached"),
    "qualifying_days": _l("Days of spend that count for the tier"),
    "complaint_response_hours": _l("Hours to the first response to a complaint"),
    "complaint_resolution_hours": _l("Hours to resolve a complaint"),
    "complaint_reopen_days": _l("Days a member may reopen a resolved complaint"),
    "fraud_purchases_per_day": _l("More purchases than this by one member in one day"),
    "fraud_adjustment_points": _l("Manual adjustments of at least this many points, added or taken"),
    "fraud_return_points_percent": _l("Returns of purchases paid at least this percentage with points"),
    "quiet_hours_start": _l("Quiet hours begin at (hour, store time): messages wait until they end"),
    "quiet_hours_end": _l("Quiet hours end at (hour, store time)"),
    "marketing_monthly_cap": _l("Marketing messages a member gets at most in a month"),
}
# The rules as the page groups them; the section id is also the anchor other pages link to.
RULE_SECTIONS = (
    ("points-rules", _l("Points"), ("earn_rate_milli", "redeem_points_per_yuan", "redeem_minimum",
                                    "redeem_cap_percent", "purchase_cap_fen", "shortfall_policy", "referral_bonus")),
    ("expiry-rules", _l("Expiry and tiers"), ("expiry_days", "tier_retention_days", "qualifying_days")),
    ("member-rules", _l("Members"), ("privacy_version", "guardian_age", "activation_minutes")),
    ("complaint-rules", _l("Complaints"), ("complaint_response_hours", "complaint_resolution_hours",
                                           "complaint_reopen_days")),
    ("fraud-rules", _l("Fraud signals"), ("fraud_purchases_per_day", "fraud_adjustment_points",
                                          "fraud_return_points_percent")),
    ("message-rules", _l("Messages"), ("quiet_hours_start", "quiet_hours_end", "marketing_monthly_cap")),
)
assert sorted(name for *_, names in RULE_SECTIONS for name in names) == sorted(RULE_LABELS)
POLICY_LABELS = {"deduct": _l("Deduct them from the cash refund"), "negative": _l("Leave a negative balance")}


class SettingProblem(ValueError):
    pass


def _decimal(text: str, places: int) -> int:
    """'1.5' with places=3 -> 1500; refuses anything but plain decimals."""
    value = normalise_text(text).replace(",", "").removeprefix("¥").strip()
    match = re.fullmatch(r"([0-9]{1,9})(?:\.([0-9]*))?", value)
    if not match or len(match.group(2) or "") > places:
        raise SettingProblem
    return int(match.group(1)) * 10**places + int((match.group(2) or "").ljust(places, "0") or 0)


def _tier_rows(values: dict | None = None) -> list[dict]:
    """The tiers as the form shows them: their current values, or what was just sent."""
    rows = []
    for tier in tiers.all_tiers(db.session):
        shown = {
            "name_zh": tier.name_zh, "name_en": tier.name_en,
            "threshold": f"{tier.threshold_fen // 100}.{tier.threshold_fen % 100:02d}",
            "multiplier": f"{tier.multiplier_milli / 1000:g}", "discount": f"{tier.discount_bp / 100:g}",
            "birthday_bonus": str(tier.birthday_bonus),
        }
        if values is not None:
            shown = {field: values.get(f"{tier.code}-{field}", "") for field in TIER_FIELDS}
        rows.append({"tier": tier, "shown": shown})
    return rows


def _page(status: int = 200, *, tier_values: dict | None = None, tier_errors: dict | None = None,
          rule_values: dict | None = None, rule_errors: dict | None = None):
    current = rules()
    shown_rules = rule_values or {name: str(getattr(current, name)) for name in RULE_LABELS}
    return render_page(
        TEMPLATE, status=status, tier_rows=_tier_rows(tier_values), tier_errors=tier_errors or {},
        rule_labels=RULE_LABELS, rule_sections=RULE_SECTIONS, rule_values=shown_rules, rule_errors=rule_errors or {},
        policy_labels=POLICY_LABELS, saved=request.args.get("saved"),
    )


@bp.route("/settings")
@access("manager")
def show_settings():
    """The tiers and the points rules in force; admins may change them."""
    return _page()


@bp.route("/settings/tiers", methods=["POST"])
@access("manager", recent_login=True)
def update_tiers():
    """Change the tiers (names, thresholds, multipliers, discounts, birthday bonus) all at once."""
    form = request.form
    errors: dict[str, str] = {}
    wanted = []
    for tier in tiers.all_tiers(db.session):
        def read(field: str, places: int):
            try:
                return _decimal(form.get(f"{tier.code}-{field}", ""), places)
            except SettingProblem:
                errors[f"{tier.code}-{field}"] = str(_l("Enter a number such as 1.5."))
                return 0

        wanted.append(tiers.TierSetting(
            code=tier.code, name_zh=normalise_text(form.get(f"{tier.code}-name_zh")),
            name_en=normalise_text(form.get(f"{tier.code}-name_en")),
            threshold_fen=read("threshold", 2), multiplier_milli=read("multiplier", 3),
            discount_bp=read("discount", 2), birthday_bonus=read("birthday_bonus", 0),
        ))
    if not errors:
        try:
            tiers.update_tiers(db.session, wanted, staff_id=current_user.id, now=now(), ip=request.remote_addr)
        except tiers.TierSettingsError as refusal:
            field = refusal.field
            for suffix in ("_fen", "_milli", "_bp"):
                field = field.removesuffix(suffix)
            errors[field] = str(refusal.message)
        else:
            db.session.commit()
            return redirect(url_for("manage.show_settings", saved="tiers"), code=303)
    db.session.rollback()
    return _page(422, tier_values=dict(form), tier_errors=errors)


@bp.route("/settings/rules", methods=["POST"])
@access("manager", recent_login=True)
def update_rules():
    """Change the points rules; each change is audited and applies from the next transaction."""
    sent = {name: normalise_text(request.form.get(name)) for name in RULE_LABELS}
    errors, parsed = {}, {}
    for name, text in sent.items():
        try:
            parsed[name] = rules_service.parse_rule(name, text)
        except rules_service.RuleError:
            if name in rules_service.BOUNDS:
                low, high = rules_service.BOUNDS[name]
                errors[name] = str(_l("Enter a whole number from %(low)s to %(high)s.", low=f"{low:,}",
                                      high=f"{high:,}"))
            else:
                errors[name] = str(_l("Choose one of the options."))
    if errors:
        return _page(422, rule_values=sent, rule_errors=errors)
    current = rules()
    for name, value in parsed.items():
        if value != getattr(current, name):
            rules_service.set_rule(db.session, name, str(value), staff=current_user, now=now())
    db.session.commit()
    return redirect(url_for("manage.show_settings", saved="rules"), code=303)

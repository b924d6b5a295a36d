# ruff: noqa: RUF001 - the names are deliberately multilingual unicode
"""Deterministic, realistic seed data: the same seed always gives the same account.

Contacts get unicode names, phones and emails with multitext enum codes, values in every
seeded custom-field type, tags, a company, leads, customers, catalog elements and chat links,
with timestamps spread over the year (`spread_s`) before `data_epoch`. Ids grow with
`created_at`, as in a real account, and some contacts share one `updated_at` second (bulk
imports), so tie handling gets exercised. 100,000 contacts take about a second.
"""

from __future__ import annotations

import random
import uuid
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from sync.emulator.model import (
    CatalogElementLink,
    ChatLink,
    Contact,
    CustomField,
    EnumOption,
    Tag,
    User,
    field_ranks,
    in_field_order,
)
from sync.emulator.seed_objects import object_values
from sync.emulator.settings import EmulatorSettings

T = TypeVar("T")
YEAR_S = 365 * 86_400
FIRST_CONTACT_ID = 20_000_001
FIRST_COMPANY_ID = 40_000_001
FIRST_LEAD_ID = 60_000_001
FIRST_CUSTOMER_ID = 80_000_001
CATALOG_ID = 7_001

FIRST_NAMES = (
    "Анна",
    "Иван",
    "Мария",
    "Сергей",
    "Ольга",
    "Дмитрий",
    "Елена",
    "Алексей",
    "Татьяна",
    "Николай",
    "Ёлка",
    "Айгерим",
    "Нурлан",
    "Олена",
    "Богдан",
    "José",
    "María",
    "João",
    "Zoë",
    "Jürgen",
    "Søren",
    "Ayşe",
    "Çağrı",
    "Đorđe",
    "李",
    "王",
    "Thảo",
    "Fatma",
    "Noël",
    "Екатерина",
    "Павел",
    "Jane",
    "John",
    "Łukasz",
    "Ștefan",
)
LAST_NAMES = (
    "Иванова",
    "Петров",
    "Смирнова",
    "Кузнецов",
    "Попова",
    "Соколов",
    "Лебедева",
    "Козлов",
    "Новикова",
    "Морозов",
    "Шевченко",
    "Ковальчук",
    "Жумабаев",
    "García",
    "Müller",
    "Øster",
    "Yılmaz",
    "Nguyễn",
    "伟",
    "芳",
    "O'Brien",
    "Smith-Jones",
    "Łęcki",
    "Ђорђевић",
    "Alves",
    "Фёдоров",
    "Пётр-Ли",
    "Doe",
)
POSITIONS = ("Директор", "Менеджер", "CEO", "Бухгалтер", "Закупщик", "Head of Sales", "")
DOMAINS = ("example.com", "example.org", "mail.example.ru", "пример.рф", "corp.example.net")
TAG_NAMES = (
    ("VIP", "#ffdc7f"),
    ("партнёр", None),
    ("новый", "#99ccff"),
    ("B2B", None),
    ("опт", None),
    ("newsletter", "#c1e0ff"),
    ("重要", None),
    ("холодный", None),
    ("выставка-2025", None),
    ("Ёж & Co", None),
)
USERS = (
    (8_000_001, "Администратор", "admin@example.com", 0),
    (8_000_002, "Мария Продажи", "sales1@example.com", 101),
    (8_000_003, "Игорь Продажи", "sales2@example.com", 101),
    (8_000_004, "Support Team", "support@example.com", 102),
    (8_000_005, "Робот импорта", "robot@example.com", 0),
)

# Users deleted from the account after they created or edited contacts. amoCRM keeps their ids
# in `created_by`/`updated_by` but no longer lists them, so a client that sends a fetched
# contact back whole gets `NotSupportedChoice` at `created_by` (fact sheet §5, I-252/I-366).
DELETED_USER_IDS = (7_999_901, 7_999_902)


def build_fields() -> list[CustomField]:
    """The account's contact fields: predefined PHONE/EMAIL/POSITION plus one of each type."""

    def enums(first_id: int, values: tuple[str, ...]) -> list[EnumOption]:
        return [EnumOption(first_id + i, v, (i + 1) * 2) for i, v in enumerate(values)]

    phone = ("WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER")
    interests = ("CRM", "Аналитика", "Интеграции", "Обучение", "Поддержка")
    sources = ("Сайт", "Реклама", "Рекомендация", "Выставка", "Холодный звонок")
    channels = ("Звонок", "Email", "Мессенджер")
    return [
        CustomField(570_001, "Телефон", "multitext", "PHONE", 4, enums(840_001, phone), True),
        CustomField(
            570_002,
            "Email",
            "multitext",
            "EMAIL",
            6,
            enums(840_011, ("WORK", "PRIV", "OTHER")),
            True,
        ),
        CustomField(570_003, "Должность", "text", "POSITION", 2, None, True),
        CustomField(570_004, "Источник", "select", None, 510, enums(840_021, sources)),
        CustomField(570_005, "Интересы", "multiselect", None, 512, enums(840_031, interests)),
        CustomField(570_006, "Дата договора", "date", None, 514),
        CustomField(570_007, "Подписка на рассылку", "checkbox", None, 516),
        CustomField(570_008, "Бюджет", "numeric", None, 518),
        CustomField(570_009, "Сайт", "url", None, 520),
        CustomField(570_010, "Комментарий", "textarea", None, 522),
        CustomField(570_011, "День рождения", "birthday", None, 524),
        CustomField(570_012, "Канал связи", "radiobutton", None, 526, enums(840_041, channels)),
        CustomField(570_021, "Юр. лицо", "legal_entity", None, 528),
        CustomField(570_022, "Связанный товар", "linked_entity", None, 530),
        CustomField(570_023, "Договор (файл)", "file", None, 532),
    ]


def build_users() -> list[User]:
    return [User(uid, name, email, group) for uid, name, email, group in USERS]


def build_tags() -> list[Tag]:
    return [Tag(900_001 + i, name, color) for i, (name, color) in enumerate(TAG_NAMES)]


@dataclass
class SeedData:
    fields: list[CustomField]
    users: list[User]
    tags: list[Tag]
    contacts: list[Contact]
    chat_links: list[ChatLink] = field(default_factory=list)


def generate(settings: EmulatorSettings) -> SeedData:
    """The whole seeded account for `settings.contacts` and `settings.seed`."""
    rng = random.Random(settings.seed)  # noqa: S311 - test data, not security
    maker = _ContactMaker(rng, build_fields(), build_users(), build_tags(), settings)
    contacts = maker.make_all(settings.contacts)
    _credit_deleted_users(contacts, settings)
    links = maker.chat_links if settings.seed_chat_links else []  # drawn either way: same data
    return SeedData(maker.fields, maker.users, maker.tags, contacts, links)


def _credit_deleted_users(contacts: list[Contact], settings: EmulatorSettings) -> None:
    """Make a deleted user the author (and for half of those also the last editor) of a share
    of the contacts. A random stream of its own: every other seeded value stays as it was."""
    rng = random.Random(f"deleted-users:{settings.seed}")  # noqa: S311 - test data
    for contact in contacts:
        if rng.random() >= settings.deleted_user_fraction:
            continue
        contact.created_by = rng.choice(DELETED_USER_IDS)
        if rng.random() < 0.5:
            contact.updated_by = rng.choice(DELETED_USER_IDS)


class _ContactMaker:
    """Builds contacts one by one from a single random stream (so the output is deterministic)."""

    def __init__(
        self,
        rng: random.Random,
        fields: list[CustomField],
        users: list[User],
        tags: list[Tag],
        settings: EmulatorSettings,
    ) -> None:
        self.rng, self.fields, self.users, self.tags = rng, fields, users, tags
        self.settings = settings
        self.by_code = {f.code or f.name: f for f in fields}
        self._field_ranks = field_ranks(fields)
        self.chat_links: list[ChatLink] = []
        self._next_lead = FIRST_LEAD_ID
        self._companies = max(1, settings.contacts // 5)
        # A few "import seconds" that many contacts share, so updated_at ties are common.
        start = settings.data_epoch - settings.spread_s
        self._import_seconds = sorted(start + rng.randrange(settings.spread_s) for _ in range(20))
        # Pools of shared, never-mutated value lists: far cheaper than drawing each contact's
        # optional fields afresh, and still varied enough for filters and mapping tests.
        # The radiobutton came later: its own random stream keeps every other value as it was.
        self._radio_rng = random.Random(f"radiobutton:{settings.seed}")  # noqa: S311 - test data
        # So did the object-valued fields (legal_entity, linked_entity, file), on some contacts
        self._object_rng = random.Random(f"objects:{settings.seed}")  # noqa: S311 - test data
        self._typed_pool = [self._typed_values() for _ in range(512)]
        self._tag_pool = [self._tag_ids() for _ in range(64)]

    def below(self, n: int) -> int:
        # random() is one C call; randrange/choice cost ~5x more, and 100k contacts need speed
        return int(self.rng.random() * n)

    def pick(self, items: Sequence[T]) -> T:
        return items[int(self.rng.random() * len(items))]

    def make_all(self, count: int) -> list[Contact]:
        start = self.settings.data_epoch - self.settings.spread_s
        created = sorted(start + self.below(self.settings.spread_s) for _ in range(count))
        contacts: list[Contact] = []
        next_id = FIRST_CONTACT_ID
        for created_at in created:
            contacts.append(self.make(next_id, created_at))
            next_id += 1 + self.below(3)  # deleted/merged records leave gaps in real ids
        return contacts

    def make(self, contact_id: int, created_at: int) -> Contact:
        rng = self.rng
        first, last = self.pick(FIRST_NAMES), self.pick(LAST_NAMES)
        user = self.pick(self.users)
        contact = Contact(
            id=contact_id,
            name=f"{first} {last}",
            first_name=first,
            last_name=last,
            responsible_user_id=user.id,
            group_id=user.group_id,
            created_by=self.pick(self.users).id,
            updated_by=user.id,
            created_at=created_at,
            updated_at=self._updated_at(created_at),
            closest_task_at=self._closest_task(created_at),
            is_deleted=rng.random() < self.settings.trashed_fraction,
        )
        contact.custom_fields = self._custom_fields(contact_id)
        self._links(contact)
        return contact

    def _updated_at(self, created_at: int) -> int:
        roll = self.rng.random()
        if roll < 0.3:
            return created_at
        if roll < 0.4:  # touched by a bulk import: shares its second with many others
            later = bisect_left(self._import_seconds, created_at)
            if later < len(self._import_seconds):
                return self._import_seconds[later + self.below(len(self._import_seconds) - later)]
            return created_at
        return created_at + self.below(self.settings.data_epoch + 1 - created_at)

    def _closest_task(self, created_at: int) -> int | None:
        if self.rng.random() < 0.8:
            return None
        return created_at + 86_400 + self.below(59 * 86_400)

    def _custom_fields(self, contact_id: int) -> dict[int, list[dict[str, object]]]:
        rng, values = self.rng, {}
        if rng.random() < 0.9:
            values[570_001] = self._phones()
        if rng.random() < 0.8:
            values[570_002] = self._emails(contact_id)
        position = self.pick(POSITIONS)
        if position:
            values[570_003] = [{"value": position}]
        if rng.random() < 0.5:
            values.update(self.pick(self._typed_pool))
        values.update(object_values(self._object_rng))
        return in_field_order(values, self._field_ranks)

    def _phones(self) -> list[dict[str, object]]:
        enums = self.by_code["PHONE"].enums or []
        count = 1 if self.rng.random() < 0.8 else 2
        return [self._multitext(f"+79{self.below(10**9):09d}", enums) for _ in range(count)]

    def _emails(self, contact_id: int) -> list[dict[str, object]]:
        enums = self.by_code["EMAIL"].enums or []
        address = f"client{contact_id}@{self.pick(DOMAINS)}"
        return [self._multitext(address, enums)]

    def _multitext(self, value: str, enums: list[EnumOption]) -> dict[str, object]:
        option = enums[0] if self.rng.random() < 0.6 else self.pick(enums)
        return {"value": value, "enum_id": option.id, "enum_code": option.value}

    def _typed_values(self) -> dict[int, list[dict[str, object]]]:
        rng = self.rng
        source = self.pick(self.by_code["Источник"].enums or [])
        options = self.by_code["Интересы"].enums or []
        chosen = (self.pick(options) for _ in range(1 + self.below(3)))
        interests = list({e.id: e for e in chosen}.values())
        channel = self._radio_rng.choice(self.by_code["Канал связи"].enums or [])
        start = self.settings.data_epoch - YEAR_S
        return {  # choice values as amoCRM reads them: the label in `value`, no `enum_code`
            570_004: [{"value": source.value, "enum_id": source.id}],
            570_005: [{"value": e.value, "enum_id": e.id} for e in interests],
            570_006: [{"value": (start + self.below(YEAR_S)) // 86_400 * 86_400}],
            570_007: [{"value": rng.random() < 0.5}],
            570_008: [{"value": str((1 + self.below(499)) * 1000)}],
            570_009: [{"value": f"https://site{self.below(1000)}.example.com"}],
            570_010: [{"value": "Перезвонить после 15:00\nвторая строка — «кавычки»"}],
            570_012: [{"value": channel.value, "enum_id": channel.id}],
        }

    def _tag_ids(self) -> list[int]:
        count = self.pick((0, 0, 1, 1, 2, 3))
        return list(dict.fromkeys(self.pick(self.tags).id for _ in range(count)))

    def _links(self, contact: Contact) -> None:
        rng = self.rng
        contact.tag_ids = self.pick(self._tag_pool)
        if rng.random() < 0.3:
            contact.company_id = FIRST_COMPANY_ID + self.below(self._companies)
        for _ in range(self.pick((0, 0, 1, 1, 2, 3))):
            contact.lead_ids.append(self._next_lead)
            self._next_lead += 1
        if rng.random() < 0.1:
            contact.customer_ids.append(FIRST_CUSTOMER_ID + contact.id % 100_000)
        if rng.random() < 0.05:
            link = CatalogElementLink(500_000 + self.below(5000), CATALOG_ID, 1 + self.below(5))
            contact.catalog_elements.append(link)
        if rng.random() < 0.05:
            chat_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            self.chat_links.append(ChatLink(700_001 + len(self.chat_links), contact.id, chat_id))

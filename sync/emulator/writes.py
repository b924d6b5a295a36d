"""Validation of POST/PATCH contact payloads into `ContactPatch`es.

A batch is all-or-nothing: every entity is checked, and if any has an error the whole request
gets one 400 listing the errors per `request_id` (with amoCRM's codes and dot paths) and nothing
is saved.
"""

from __future__ import annotations

from typing import Any

from sync.emulator.patches import ContactPatch, TagRef
from sync.emulator.problems import ApiProblem, validation_failed
from sync.emulator.store import Account
from sync.emulator.values import FieldErrors, error, normalise_values

TEXT_FIELDS = ("name", "first_name", "last_name")
USER_FIELDS = ("responsible_user_id", "created_by", "updated_by")


def parse_batch(body: Any, account: Account, *, update: bool) -> list[ContactPatch]:
    """A JSON array of contacts → patches, or ApiProblem (400 empty/invalid, 422 too many)."""
    if body is None or body in ([], {}):
        raise ApiProblem(400, "Request data can not be empty")
    if not isinstance(body, list):
        raise ApiProblem(400, "Request data must be an array of entities")
    if len(body) > account.settings.max_batch:
        raise ApiProblem(422, f"Limit {account.settings.max_batch} per page")
    return parse_entities(body, account, update=update)


def parse_entities(items: list[Any], account: Account, *, update: bool) -> list[ContactPatch]:
    patches, rejected = [], []
    for index, item in enumerate(items):
        request_id = _request_id(item, index)
        errors: FieldErrors = []
        patch = parse_entity(item, account, request_id, errors, update=update)
        if errors:
            by_index = account.settings.rejected_request_id == "index"
            rejected.append(
                {"request_id": str(index) if by_index else request_id, "errors": errors}
            )
        patches.append(patch)
    if rejected:
        raise validation_failed(rejected)
    return patches


def parse_entity(
    item: Any, account: Account, request_id: str, errors: FieldErrors, *, update: bool
) -> ContactPatch:
    patch = ContactPatch(request_id)
    if not isinstance(item, dict):
        errors.append(error("InvalidType", "", "This value should be of type object."))
        return patch
    if update:
        patch.contact_id = _contact_id(item, account, errors)
    _scalars(item, account, patch, errors)
    _custom_fields(item.get("custom_fields_values"), account, patch, errors)
    _tags(item, account, patch, errors)
    return patch


def _request_id(item: Any, index: int) -> str:
    if isinstance(item, dict) and item.get("request_id") is not None:
        return str(item["request_id"])
    return str(index)


def _contact_id(item: dict[str, Any], account: Account, errors: FieldErrors) -> int | None:
    contact_id = item.get("id")
    if contact_id is None:
        errors.append(error("NotBlank", "id", "This value should not be blank."))
    elif not _is_int(contact_id):
        errors.append(error("InvalidType", "id", "This value should be of type int."))
    elif account.live(contact_id) is None:
        errors.append(error("NotFound", "id", "Entity not found."))
    else:
        return int(contact_id)
    return None


def _scalars(
    item: dict[str, Any], account: Account, patch: ContactPatch, errors: FieldErrors
) -> None:
    for name in (n for n in TEXT_FIELDS if n in item):
        if isinstance(item[name], str):
            patch.scalars[name] = item[name]
        else:
            errors.append(error("InvalidType", name, "This value should be of type string."))
    for name in (n for n in USER_FIELDS if n in item):
        _user(item[name], name, account, patch, errors)
    for name in ("created_at", "updated_at"):
        if name not in item:
            continue
        if not _is_int(item[name]):
            errors.append(error("InvalidType", name, "This value should be of type int."))
        elif name == "created_at" or account.settings.honour_client_updated_at:
            patch.scalars[name] = item[name]


def _user(
    value: Any, name: str, account: Account, patch: ContactPatch, errors: FieldErrors
) -> None:
    if not _is_int(value):
        errors.append(error("InvalidType", name, "This value should be of type int."))
    elif value not in account.users:
        # Deleted users too: their ids stay on the contacts they created, but sending one back
        # is refused (amoCRM answers a re-sent GET payload so, fact sheet §5).
        errors.append(
            error("NotSupportedChoice", name, "The value you selected is not a valid choice.")
        )
    else:
        patch.scalars[name] = value


def _custom_fields(raw: Any, account: Account, patch: ContactPatch, errors: FieldErrors) -> None:
    if raw is None:
        return
    if not isinstance(raw, list):
        errors.append(
            error("InvalidType", "custom_fields_values", "This value should be of type array.")
        )
        return
    for index, entry in enumerate(raw):
        path = f"custom_fields_values.{index}"
        if not isinstance(entry, dict):
            errors.append(error("InvalidType", path, "This value should be of type object."))
            continue
        field = _field_of(entry, account, path, errors)
        if field is not None:
            values = normalise_values(field, entry.get("values"), f"{path}.values", errors)
            patch.custom_fields[field.id] = values


def _field_of(entry: dict[str, Any], account: Account, path: str, errors: FieldErrors) -> Any:
    field_id, code = entry.get("field_id"), entry.get("field_code")
    if field_id is not None:
        field = account.fields.get(field_id) if _is_int(field_id) else None
        if field is None:
            errors.append(
                error(
                    "NotSupportedChoice",
                    f"{path}.field_id",
                    "The value you selected is not a valid choice.",
                )
            )
        return field
    if code is not None:
        field = account.fields_by_code.get(code) if isinstance(code, str) else None
        if field is None:
            errors.append(
                error(
                    "NotSupportedChoice",
                    f"{path}.field_code",
                    "The value you selected is not a valid choice.",
                )
            )
        return field
    errors.append(
        error("NotBlank", f"{path}.field_id", "You must pass either field_id or field_code.")
    )
    return None


def _tags(item: dict[str, Any], account: Account, patch: ContactPatch, errors: FieldErrors) -> None:
    embedded = item.get("_embedded")
    if isinstance(embedded, dict) and "tags" in embedded:
        if embedded["tags"] is None:
            patch.tags_cleared = True
        else:
            patch.tags_set = _tag_refs(embedded["tags"], "_embedded.tags", account, errors)
    for key in ("tags_to_add", "tags_to_delete"):
        if item.get(key) is not None:
            refs = _tag_refs(item[key], key, account, errors)
            (patch.tags_add if key == "tags_to_add" else patch.tags_delete).extend(refs)


def _tag_refs(raw: Any, path: str, account: Account, errors: FieldErrors) -> list[TagRef]:
    if not isinstance(raw, list):
        errors.append(error("InvalidType", path, "This value should be of type array."))
        return []
    refs: list[TagRef] = []
    for index, tag in enumerate(raw):
        ref = _tag_ref(tag, f"{path}.{index}", account, errors)
        if ref is not None:
            refs.append(ref)
    return refs


def _tag_ref(tag: Any, path: str, account: Account, errors: FieldErrors) -> TagRef | None:
    if isinstance(tag, dict) and tag.get("id") is not None:
        if _is_int(tag["id"]) and tag["id"] in account.tags:
            return ("id", tag["id"])
        errors.append(
            error(
                "NotSupportedChoice", f"{path}.id", "The value you selected is not a valid choice."
            )
        )
        return None
    if isinstance(tag, dict) and isinstance(tag.get("name"), str) and tag["name"].strip():
        return ("name", tag["name"].strip())
    errors.append(error("NotBlank", path, "Tag id or name is required."))
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)

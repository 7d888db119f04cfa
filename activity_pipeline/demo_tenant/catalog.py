"""The vocabulary the demo tenant draws from: apps with their real ids, event kinds, places, devices.

Everything here is static. `data.py` picks from it with a seeded generator, and `render.py` turns a pick
into a record shaped like the real ones the Activities API returns
(https://learn.microsoft.com/en-us/defender-cloud-apps/api-activities).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """One kind of activity an app reports."""

    operation: str  # mainInfo.rawOperationName
    type_name: str  # eventTypeName
    type_value: str  # eventTypeValue
    event_type: int  # eventType
    generic: str  # genericEventType
    description: str
    classification: str
    weight: float
    is_admin: bool = False
    # True, False, or None when the app reports no result for this kind of event.
    success: bool | None = None
    failure_message: str = ""

    @property
    def info_type(self) -> str:
        # Published records show "basic" and "failedLogin" only; an admin activity says so in its app's own event
        # (Office 365's UserType), not here.
        return "failedLogin" if self.success is False else "basic"


@dataclass(frozen=True)
class App:
    app_id: int
    name: str
    weight: float
    # "s": Office 365 audit style, one-second resolution; "ms": millisecond resolution.
    resolution: str
    # How `_id` looks for this app: "o365" <tenantId>_<appId>_<uuid>, "sha" 64 hex, "ms_uuid"
    # <ms>_<uuid>, "objectid" 24 hex.
    id_style: str
    # Which rawDataJson shape the app emits (see render.py).
    raw_style: str
    events: tuple[Event, ...]
    # Power BI and Dynamics 365 arrive 24-72 h late (reference: "Records").
    late_by_days: bool = False
    source: int = 2


def _login_events(prefix: str, base: int) -> tuple[Event, ...]:
    return (
        Event(
            "UserLoggedIn",
            "EVENT_CATEGORY_LOGIN",
            f"EVENT_{prefix}_LOGIN",
            base,
            "ENUM_ACTIVITY_GENERIC_TYPE_LOGIN",
            "Log on",
            "access",
            3.0,
            success=True,
        ),
        Event(
            "UserLoginFailed",
            "EVENT_CATEGORY_FAILED_LOGIN",
            f"EVENT_{prefix}_LOGIN_FAILED",
            base + 1,
            "ENUM_ACTIVITY_GENERIC_TYPE_FAILED_LOGIN",
            "Failed log on",
            "access",
            0.35,
            success=False,
            failure_message="Invalid username or password",
        ),
    )


def _ev(
    operation: str,
    type_name: str,
    type_value: str,
    event_type: int,
    description: str,
    weight: float,
    *,
    admin: bool = False,
    classification: str = "activity",
) -> Event:
    return Event(
        operation,
        type_name,
        type_value,
        event_type,
        "ENUM_ACTIVITY_GENERIC_TYPE_ADMINISTRATION" if admin else "ENUM_ACTIVITY_GENERIC_TYPE_BASIC",
        description,
        "admin" if admin else classification,
        weight,
        is_admin=admin,
    )


APPS: tuple[App, ...] = (
    App(
        11161,
        "Office 365",
        4.0,
        "ms",
        "sha",
        "aad_login",
        (
            *_login_events("AAD", 2293760),
            _ev(
                "Add member to role.",
                "EVENT_CATEGORY_ADD_PRIVILEGE",
                "EVENT_O365_AAD_ADD_ROLE_MEMBER",
                233800,
                "Add member to role",
                0.05,
                admin=True,
            ),
            _ev(
                "Reset user password.",
                "EVENT_CATEGORY_CHANGE_PASSWORD",
                "EVENT_O365_AAD_RESET_PASSWORD",
                233801,
                "Reset user password",
                0.05,
                admin=True,
            ),
        ),
    ),
    App(
        20893,
        "Microsoft Exchange Online",
        5.0,
        "s",
        "o365",
        "o365",
        (
            _ev(
                "MailItemsAccessed",
                "EVENT_CATEGORY_READ_EMAIL",
                "EVENT_O365_EXCHANGE_GENERIC",
                233500,
                "Access mail items",
                5.0,
            ),
            _ev("Send", "EVENT_CATEGORY_SEND_EMAIL", "EVENT_O365_EXCHANGE_GENERIC", 233501, "Send message", 2.0),
            _ev(
                "New-InboxRule",
                "EVENT_CATEGORY_CREATE_RULE",
                "EVENT_O365_EXCHANGE_ADMIN",
                233502,
                "Create inbox rule",
                0.1,
            ),
            _ev(
                "Set-Mailbox",
                "EVENT_CATEGORY_EDIT_SETTINGS",
                "EVENT_O365_EXCHANGE_ADMIN",
                233503,
                "Change mailbox settings",
                0.08,
                admin=True,
            ),
        ),
    ),
    App(
        20892,
        "Microsoft SharePoint Online",
        3.0,
        "s",
        "o365",
        "o365",
        (
            _ev(
                "FileAccessed",
                "EVENT_CATEGORY_ACCESS_FILE",
                "EVENT_O365_SHAREPOINT_GENERIC",
                233600,
                "Access file",
                4.0,
            ),
            _ev("FileModified", "EVENT_CATEGORY_EDIT_ITEM", "EVENT_O365_SHAREPOINT_GENERIC", 233601, "Edit file", 1.5),
            _ev("SharingSet", "EVENT_CATEGORY_SHARE_ITEM", "EVENT_O365_SHAREPOINT_GENERIC", 233602, "Share item", 0.4),
            _ev(
                "SiteCollectionAdminAdded",
                "EVENT_CATEGORY_ADD_PRIVILEGE",
                "EVENT_O365_SHAREPOINT_ADMIN",
                233603,
                "Add site collection admin",
                0.03,
                admin=True,
            ),
        ),
    ),
    App(
        15600,
        "Microsoft OneDrive for Business",
        2.5,
        "s",
        "o365",
        "o365",
        (
            _ev(
                "FilePreviewed", "EVENT_CATEGORY_VIEW_ITEM", "EVENT_O365_ONEDRIVE_GENERIC", 233580, "Preview file", 3.0
            ),
            _ev(
                "FileUploaded", "EVENT_CATEGORY_UPLOAD_FILE", "EVENT_O365_ONEDRIVE_GENERIC", 233581, "Upload file", 1.5
            ),
            _ev(
                "FileDownloaded",
                "EVENT_CATEGORY_DOWNLOAD_FILE",
                "EVENT_O365_ONEDRIVE_GENERIC",
                233582,
                "Download file",
                1.5,
            ),
        ),
    ),
    App(
        28375,
        "Microsoft Teams",
        2.5,
        "s",
        "o365",
        "o365",
        (
            _ev("MessageSent", "EVENT_CATEGORY_SEND_MESSAGE", "EVENT_O365_TEAMS_GENERIC", 233700, "Send message", 3.0),
            _ev(
                "MemberAdded", "EVENT_CATEGORY_ADD_USER", "EVENT_O365_TEAMS_GENERIC", 233701, "Add member to team", 0.3
            ),
            _ev(
                "TeamSettingChanged",
                "EVENT_CATEGORY_EDIT_SETTINGS",
                "EVENT_O365_TEAMS_ADMIN",
                233702,
                "Change team setting",
                0.05,
                admin=True,
            ),
        ),
    ),
    App(
        26324,
        "Microsoft Power BI",
        0.6,
        "s",
        "o365",
        "o365",
        (
            _ev("ViewReport", "EVENT_CATEGORY_VIEW_ITEM", "EVENT_O365_POWERBI_GENERIC", 233900, "View report", 3.0),
            _ev(
                "ExportReport",
                "EVENT_CATEGORY_DOWNLOAD_FILE",
                "EVENT_O365_POWERBI_GENERIC",
                233901,
                "Export report",
                0.5,
            ),
        ),
        late_by_days=True,
    ),
    App(
        12260,
        "Microsoft Azure",
        1.2,
        "ms",
        "ms_uuid",
        "azure",
        (
            _ev(
                "Microsoft.Compute/virtualMachines/write",
                "EVENT_CATEGORY_CREATE_RESOURCE",
                "EVENT_AZURE_GENERIC",
                234100,
                "Create or update virtual machine",
                1.0,
                admin=True,
            ),
            _ev(
                "Microsoft.Storage/storageAccounts/listKeys/action",
                "EVENT_CATEGORY_ACCESS_KEY",
                "EVENT_AZURE_GENERIC",
                234101,
                "List storage account keys",
                0.3,
                admin=True,
            ),
            _ev(
                "Microsoft.Resources/deployments/read",
                "EVENT_CATEGORY_READ",
                "EVENT_AZURE_GENERIC",
                234102,
                "Read deployment",
                2.0,
            ),
        ),
    ),
    App(
        11599,
        "Amazon Web Services",
        1.5,
        "ms",
        "objectid",
        "aws",
        (
            *_login_events("AWS", 234200),
            _ev("GetObject", "EVENT_CATEGORY_DOWNLOAD_FILE", "EVENT_AWS_GENERIC", 234202, "Get S3 object", 3.0),
            _ev(
                "RunInstances",
                "EVENT_CATEGORY_CREATE_RESOURCE",
                "EVENT_AWS_GENERIC",
                234203,
                "Run EC2 instances",
                0.2,
                admin=True,
            ),
            _ev(
                "AttachUserPolicy",
                "EVENT_CATEGORY_ADD_PRIVILEGE",
                "EVENT_AWS_GENERIC",
                234204,
                "Attach IAM user policy",
                0.05,
                admin=True,
            ),
        ),
    ),
    App(
        11770,
        "Google Workspace",
        1.0,
        "ms",
        "objectid",
        "google",
        (
            *_login_events("GOOGLE", 234300),
            _ev("view", "EVENT_CATEGORY_VIEW_ITEM", "EVENT_GOOGLE_DRIVE", 234302, "View document", 3.0),
            _ev(
                "change_user_password",
                "EVENT_CATEGORY_CHANGE_PASSWORD",
                "EVENT_GOOGLE_ADMIN",
                234303,
                "Change user password",
                0.05,
                admin=True,
            ),
        ),
    ),
    App(
        10489,
        "Box",
        0.5,
        "s",
        "objectid",
        "generic",
        (
            *_login_events("BOX", 234400),
            _ev("DOWNLOAD", "EVENT_CATEGORY_DOWNLOAD_FILE", "EVENT_BOX_GENERIC", 234402, "Download file", 2.0),
        ),
    ),
    App(
        11627,
        "Dropbox",
        0.4,
        "s",
        "objectid",
        "generic",
        (
            *_login_events("DROPBOX", 234500),
            _ev("file_download", "EVENT_CATEGORY_DOWNLOAD_FILE", "EVENT_DROPBOX_GENERIC", 234502, "Download file", 2.0),
        ),
    ),
    App(
        11114,
        "Salesforce",
        0.8,
        "ms",
        "ms_uuid",
        "generic",
        (
            *_login_events("SALESFORCE", 234600),
            _ev(
                "ReportExport", "EVENT_CATEGORY_DOWNLOAD_FILE", "EVENT_SALESFORCE_GENERIC", 234602, "Export report", 0.4
            ),
            _ev("ViewRecord", "EVENT_CATEGORY_VIEW_ITEM", "EVENT_SALESFORCE_GENERIC", 234603, "View record", 3.0),
        ),
    ),
    App(
        14509,
        "ServiceNow",
        0.4,
        "ms",
        "ms_uuid",
        "generic",
        (
            *_login_events("SERVICENOW", 234700),
            _ev(
                "incident.update",
                "EVENT_CATEGORY_EDIT_ITEM",
                "EVENT_SERVICENOW_GENERIC",
                234702,
                "Update incident",
                2.0,
            ),
        ),
    ),
    App(
        10980,
        "Okta",
        1.0,
        "ms",
        "objectid",
        "okta",
        (
            *_login_events("OKTA", 234800),
            _ev(
                "user.account.privilege.grant",
                "EVENT_CATEGORY_ADD_PRIVILEGE",
                "EVENT_OKTA_ADMIN",
                234802,
                "Grant privilege",
                0.05,
                admin=True,
            ),
        ),
    ),
)

APP_BY_ID: dict[int, App] = {app.app_id: app for app in APPS}

# (country code, city, region, organization, latitude, longitude, weight)
PLACES: tuple[tuple[str, str, str, str, float, float, float], ...] = (
    ("US", "Seattle", "Washington", "Contoso Corp", 47.6062, -122.3321, 30.0),
    ("US", "New York", "New York", "Verizon Business", 40.7128, -74.006, 12.0),
    ("GB", "London", "England", "British Telecommunications", 51.5074, -0.1278, 10.0),
    ("DE", "Frankfurt", "Hesse", "Deutsche Telekom", 50.1109, 8.6821, 8.0),
    ("NL", "Amsterdam", "Noord-Holland", "euNetworks", 52.3090, 4.9401, 5.0),
    ("IL", "Tel Aviv", "Tel Aviv", "Cellcom Group", 32.0679, 34.7604, 5.0),
    ("IN", "Bengaluru", "Karnataka", "Bharti Airtel", 12.9716, 77.5946, 8.0),
    ("JP", "Tokyo", "Tokyo", "NTT Communications", 35.6762, 139.6503, 4.0),
    ("BR", "Sao Paulo", "Sao Paulo", "Claro Brasil", -23.5505, -46.6333, 3.0),
    ("AU", "Sydney", "New South Wales", "Telstra", -33.8688, 151.2093, 3.0),
    ("FR", "Paris", "Ile-de-France", "Orange", 48.8566, 2.3522, 4.0),
    ("CA", "Toronto", "Ontario", "Rogers Communications", 43.6532, -79.3832, 4.0),
    ("SG", "Singapore", "Singapore", "Singtel", 1.3521, 103.8198, 2.0),
    ("RU", "Moscow", "Moscow", "Rostelecom", 55.7558, 37.6173, 0.6),
    ("NG", "Lagos", "Lagos", "MTN Nigeria", 6.5244, 3.3792, 0.5),
    ("KP", "Pyongyang", "Pyongyang", "Star JV", 39.0392, 125.7625, 0.05),
)

# (ip.category, categoryValue); 1 corporate, 2 admin, 3 risky, 4 VPN, 5 cloud provider, 6 other
IP_CATEGORIES: tuple[tuple[int, str], ...] = (
    (0, "NONE"),
    (1, "CORPORATE"),
    (2, "ADMINISTRATIVE"),
    (3, "RISKY"),
    (4, "VPN"),
    (5, "CLOUD_PROVIDER"),
)

# (user agent string, family, name, os name, os family, device type, browser, type)
DEVICES: tuple[tuple[str, str, str, str, str, str, str, str], ...] = (
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
        "CHROME",
        "Chrome",
        "Windows 10",
        "Windows",
        "DESKTOP",
        "CHROME",
        "Browser",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Safari/605.1.15",
        "SAFARI",
        "Safari",
        "Mac OS X",
        "Mac OS X",
        "DESKTOP",
        "SAFARI",
        "Browser",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0 Safari/537.36 Edg/124.0",
        "EDGE",
        "Edge",
        "Windows 11",
        "Windows",
        "DESKTOP",
        "EDGE",
        "Browser",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
        "MOBILE_SAFARI",
        "Mobile Safari",
        "iOS",
        "iOS",
        "MOBILE",
        "MOBILE_SAFARI",
        "Browser",
    ),
    (
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)",
        "MICROSOFT_OUTLOOK",
        "Microsoft Outlook",
        "Windows 10",
        "Windows",
        "DESKTOP",
        "MICROSOFT_OUTLOOK",
        "Application",
    ),
    (
        "OneDriveMpc-Transform_Thumbnail/1.0",
        "MICROSOFT_ONEDRIVE_FOR_BUSINESS",
        "Microsoft OneDrive for Business",
        "Unknown",
        "Unknown",
        "OTHER",
        "MICROSOFT_ONEDRIVE_FOR_BUSINESS",
        "Application",
    ),
    (
        "aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0 exe/x86_64.ubuntu.22",
        "AWS_CLI",
        "AWS CLI",
        "Linux",
        "Linux",
        "OTHER",
        "AWS_CLI",
        "Application",
    ),
    (
        "python-requests/2.31.0",
        "PYTHON_REQUESTS",
        "Python Requests",
        "Unknown",
        "Unknown",
        "OTHER",
        "PYTHON_REQUESTS",
        "Application",
    ),
)

FIRST_NAMES = (
    "alex",
    "maria",
    "james",
    "li",
    "fatima",
    "noah",
    "olga",
    "raj",
    "sofia",
    "yuki",
    "omar",
    "emma",
    "lucas",
    "ana",
    "david",
    "chen",
    "amir",
    "julia",
    "kofi",
    "ines",
    "mateo",
    "hana",
    "igor",
    "zoe",
)
LAST_NAMES = (
    "smith",
    "garcia",
    "kim",
    "cohen",
    "novak",
    "patel",
    "silva",
    "mueller",
    "tanaka",
    "okafor",
    "rossi",
    "dubois",
    "jensen",
    "ivanova",
    "haddad",
    "nguyen",
    "walsh",
    "kowalski",
    "santos",
    "berg",
)
DOMAIN = "contoso.onmicrosoft.com"

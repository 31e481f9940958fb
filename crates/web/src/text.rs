//! Every sentence the portal shows people, in one place, ready for translation.

pub const SIGN_IN: &str = "Sign in";
pub const SIGN_OUT: &str = "Sign out";
pub const USER: &str = "User name";
pub const PASSWORD: &str = "Password";
pub const ACCOUNT_PASSWORD: &str = "Your account password";
pub const CONTINUE: &str = "Continue";
pub const SIGN_IN_INTRO: &str = "Sign in with your account to manage your app passwords.";
pub const WRONG: &str = "The user name or password is not right.";
pub const THROTTLED: &str =
    "Too many failed sign-ins for this user from your address. Wait a few minutes and try again.";
pub const UNAVAILABLE: &str = "The service is not available right now. Try again later.";
pub const SIGNED_OUT: &str = "You have signed out.";
pub const EXPIRED: &str = "Your session has ended. Sign in again.";
pub const PENDING_GONE: &str = "That sign-in took too long. Start again.";
pub const FORGED: &str =
    "This form did not come from this site, or it is too old. Reload the page and try again.";
pub const BUSY: &str = "Too many sign-ins are under way. Try again in a minute.";

pub const PASSWORDS: &str = "App passwords";
pub const PASSWORDS_INTRO: &str = "An app password lets a mail app or another program sign in as you without your account password. Make one for each device, and revoke it when the device is gone.";
pub const NONE_YET: &str = "You have no app passwords.";
pub const SERVICE: &str = "Service";
pub const LABEL: &str = "Label";
pub const CREATED: &str = "Created";
pub const EXPIRES: &str = "Expires";
pub const STATUS: &str = "Status";
pub const LAST_USE: &str = "Last use";
pub const NEVER_USED: &str = "never used";
pub const NEVER: &str = "never";
pub const EXPIRES_SOON: &str = "expires soon";
/// Before a count of logins: "used 3×".
pub const USED: &str = "used";
pub const FROM: &str = "from";
pub const VIA: &str = "via";
pub const ACTIONS: &str = "Actions";
pub const REVOKE: &str = "Revoke";
pub const REVOKE_ALL: &str = "Revoke all";
pub const REGENERATE: &str = "Regenerate";
pub const REGENERATE_CONFIRM: &str = "Make a new password in place of this one, with the same service, label and \
     networks? The old one stops working at once: put the new one into the device.";
pub const REGENERATE_REAUTH: &str =
    "For your safety, enter your account password again to make a new app password.";
pub const REVOKE_CONFIRM: &str =
    "Revoke this app password? Every device that uses it will stop signing in.";
pub const REVOKE_ALL_CONFIRM: &str =
    "Revoke every app password? Every device that uses one will stop signing in.";
pub const CANCEL: &str = "Cancel";
pub const REVOKED_ONE: &str = "The app password is revoked.";
pub const REVOKED_N: &str = "App passwords revoked:";
pub const NOT_FOUND: &str = "No such app password.";
pub const NETWORKS_EDIT: &str = "Networks";
pub const NETWORKS_TITLE: &str = "Where this app password may be used from";
pub const NETWORKS_ANY: &str = "from anywhere";
pub const NETWORKS_ONLY: &str = "only from";
pub const NETWORKS_EMPTY_HINT: &str = "Leave empty to allow it from anywhere.";
pub const SAVE: &str = "Save";
pub const NETWORKS_SAVED: &str = "The networks are saved.";

pub const CREATE: &str = "Create an app password";
pub const CREATE_BUTTON: &str = "Create";
pub const LABEL_HINT: &str = "Where you will use it, e.g. \"Phone\".";
pub const EXPIRY: &str = "Expires after";
pub const EXPIRY_DEFAULT: &str = "the usual time";
pub const DAYS_7: &str = "7 days";
pub const DAYS_30: &str = "30 days";
pub const DAYS_90: &str = "90 days";
pub const DAYS_180: &str = "180 days";
pub const YEAR_1: &str = "1 year";
pub const NETWORKS: &str = "Only from (optional)";
pub const NETWORKS_HINT: &str = "Addresses or networks, separated by commas, e.g. 192.0.2.0/24.";
pub const REAUTH: &str =
    "For your safety, enter your account password again to create an app password.";
pub const DUPLICATE: &str =
    "That form was already sent: the app password it made was shown once and is not shown again.";

pub const SHOWN_ONCE_TITLE: &str = "Your new app password";
pub const SHOWN_ONCE: &str = "Copy it now: it is shown only this once. Type it where the app asks for a password, with or without the dashes.";
pub const COPY: &str = "Copy";
pub const QR_HINT: &str = "Or scan it with your phone's camera:";
pub const QR_LABEL: &str = "QR code of the new app password";
pub const PROFILE: &str = "Set up Mail on iPhone, iPad or Mac";
pub const PROFILE_HINT: &str =
    "Download this profile and open it: it sets up the mail account with this app password.";
pub const DONE: &str = "Done";

pub const LOG: &str = "Activity";
pub const LOG_INTRO: &str = "Sign-ins with your app passwords, and failed attempts.";
pub const NO_EVENTS: &str = "Nothing yet.";
pub const TIME: &str = "Time";
pub const ADDRESS: &str = "Address";
pub const OUTCOME: &str = "Outcome";

pub const ADMIN_FIND: &str = "Find a user";
pub const ADMIN_SHOW: &str = "Show";
pub const ADMIN_VIEWING: &str = "You are managing the app passwords of";

pub const NAV: &str = "Main";
pub const DENIED: &str = "You may not do that.";
pub const BAD_REQUEST: &str = "That request cannot be used.";

//! The sign-in page: an account chooser like Google's that works without JavaScript, a
//! "use another account" form, CSRF protection (a random cookie echoed in a hidden field),
//! and error pages for requests that must never redirect.

use crate::accounts::Account;
use crate::oauth::{AUTH_PARAMS, Params};
use crate::util::{ct_eq, html_escape, random_token};

pub const CSRF_COOKIE: &str = "gatehouse_csrf";
pub const CSRF_FIELD: &str = "csrf_token";
/// The account last chosen in this browser, for `prompt=none` without `login_hint`.
pub const SESSION_COOKIE: &str = "gatehouse_account";

/// A fresh CSRF token for a browser that has none.
pub fn new_csrf_token() -> String {
    random_token(24)
}

/// The form's token must equal the cookie's (both present, same length, constant time).
pub fn csrf_ok(cookie: Option<&str>, form: Option<&str>) -> bool {
    match (cookie, form) {
        (Some(c), Some(f)) if c.len() >= 16 => ct_eq(c.as_bytes(), f.as_bytes()),
        _ => false,
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

const STYLE: &str = r#"
body{font-family:Roboto,Arial,sans-serif;background:#f0f4f9;margin:0;color:#1f1f1f}
main{max-width:450px;margin:48px auto;background:#fff;border-radius:28px;padding:36px 40px}
h1{font-weight:400;font-size:28px;margin:8px 0 4px}
p.sub{margin:0 0 24px;color:#444}
.logo{font-size:20px;font-weight:500;color:#1a73e8}
form.acct{margin:0;border-top:1px solid #e0e0e0}
form.acct button{all:unset;box-sizing:border-box;display:flex;width:100%;padding:12px 8px;cursor:pointer;align-items:center;gap:12px}
form.acct button:hover,form.acct button:focus{background:#f4f7fc;outline:none}
img.av{width:36px;height:36px;border-radius:50%}
.name{font-weight:500}.email{color:#555;font-size:14px}
details{border-top:1px solid #e0e0e0;border-bottom:1px solid #e0e0e0;padding:12px 8px}
summary{cursor:pointer;font-weight:500}
label{display:block;margin:12px 0 4px;font-size:14px}
input[type=email],input[type=text]{box-sizing:border-box;width:100%;padding:10px;border:1px solid #747775;border-radius:4px;font-size:16px}
button.primary{margin-top:16px;background:#0b57d0;color:#fff;border:0;border-radius:20px;padding:10px 24px;font-size:14px;cursor:pointer}
.err{background:#fce8e6;color:#b3261e;padding:10px;border-radius:8px;margin-bottom:16px}
.foot{margin-top:24px;font-size:12px;color:#666}
"#;

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>",
        html_escape(title)
    )
}

fn hidden_fields(params: &Params, csrf: &str) -> String {
    let mut out = String::new();
    for name in AUTH_PARAMS {
        if let Some(v) = params.get(name) {
            out.push_str(&format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                html_escape(name),
                html_escape(v)
            ));
        }
    }
    out.push_str(&format!(
        "<input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\">",
        html_escape(csrf)
    ));
    out
}

/// The account chooser for an authorization request (its parameters travel in hidden
/// fields; the form posts back to the same path).
pub fn chooser_page(
    action: &str,
    params: &Params,
    client_name: &str,
    accounts: &[Account],
    csrf: &str,
    error: Option<&str>,
) -> String {
    let hidden = hidden_fields(params, csrf);
    let hint = params.get("login_hint").map(str::to_ascii_lowercase);
    let mut body = String::new();
    body.push_str("<div class=\"logo\">Gatehouse</div><h1>Choose an account</h1>");
    body.push_str(&format!(
        "<p class=\"sub\">to continue to <b>{}</b></p>",
        html_escape(client_name)
    ));
    if let Some(e) = error {
        body.push_str(&format!(
            "<div class=\"err\" role=\"alert\">{}</div>",
            html_escape(e)
        ));
    }
    for a in accounts {
        let autofocus = if hint.as_deref() == Some(a.email.as_str()) {
            " autofocus"
        } else {
            ""
        };
        body.push_str(&format!(
            "<form class=\"acct\" method=\"post\" action=\"{action}\">{hidden}\
             <input type=\"hidden\" name=\"action\" value=\"choose\">\
             <input type=\"hidden\" name=\"email\" value=\"{email}\">\
             <button type=\"submit\" data-email=\"{email}\"{autofocus}>\
             <img class=\"av\" alt=\"\" src=\"{pic}\"><span><div class=\"name\">{name}</div>\
             <div class=\"email\">{email}</div></span></button></form>",
            action = html_escape(action),
            email = html_escape(&a.email),
            name = html_escape(&a.name),
            pic = html_escape(a.picture.as_deref().unwrap_or("")),
        ));
    }
    let open = if accounts.is_empty() || error.is_some() {
        " open"
    } else {
        ""
    };
    body.push_str(&format!(
        "<details{open}><summary>Use another account</summary>\
         <form method=\"post\" action=\"{action}\" id=\"add-account\">{hidden}\
         <input type=\"hidden\" name=\"action\" value=\"add\">\
         <label for=\"new_email\">Email</label>\
         <input type=\"email\" id=\"new_email\" name=\"new_email\" required maxlength=\"254\" autocomplete=\"off\">\
         <label for=\"new_name\">Name (optional)</label>\
         <input type=\"text\" id=\"new_name\" name=\"new_name\" maxlength=\"200\">\
         <label for=\"new_hd\">Hosted domain (optional, Workspace accounts)</label>\
         <input type=\"text\" id=\"new_hd\" name=\"new_hd\" maxlength=\"253\">\
         <button class=\"primary\" type=\"submit\">Next</button></form></details>",
        action = html_escape(action),
    ));
    body.push_str(
        "<p class=\"foot\">Gatehouse identity emulator: test accounts only, no passwords.</p>",
    );
    page("Sign in - Gatehouse", &body)
}

/// An error page for a request that must not redirect (unknown client, bad redirect URI).
pub fn error_page(message: &str) -> String {
    page(
        "Error - Gatehouse",
        &format!(
            "<div class=\"logo\">Gatehouse</div><h1>Access blocked: this request is invalid</h1>\
             <div class=\"err\" role=\"alert\" id=\"error\">{}</div>\
             <p class=\"foot\">Error 400. The app sent a request the emulator cannot accept; \
             it was not redirected.</p>",
            html_escape(message)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_needs_matching_cookie_and_field() {
        let t = new_csrf_token();
        assert!(csrf_ok(Some(&t), Some(&t)));
        assert!(!csrf_ok(None, Some(&t)));
        assert!(!csrf_ok(Some(&t), None));
        assert!(!csrf_ok(Some(&t), Some("x")));
        assert!(!csrf_ok(Some("short"), Some("short")));
    }

    #[test]
    fn cookies_parse() {
        assert_eq!(
            cookie_value("a=1; gatehouse_csrf=xyz; b=2", CSRF_COOKIE),
            Some("xyz")
        );
        assert_eq!(cookie_value("a=1", CSRF_COOKIE), None);
    }

    #[test]
    fn pages_escape_input() {
        let p = Params::parse("client_id=%22%3E%3Cscript%3E&state=%3Cb%3E").unwrap();
        let html = chooser_page("/o/oauth2/v2/auth", &p, "<x>", &[], "tok", Some("<e>"));
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<b>x"));
        assert!(html.contains("&lt;x&gt;"));
        assert!(!error_page("<script>").contains("<script>"));
    }
}

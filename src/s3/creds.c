/* creds.c — where credentials come from: the chain AWS tools use.
 *
 * Order: an explicit s3fs-style passwd_file, then the environment
 * (AWS_ACCESS_KEY_ID…), then the shared files (~/.aws/credentials and
 * ~/.aws/config, profile from -o profile= or AWS_PROFILE), then web identity
 * (a token file exchanged at STS for a role), then the container endpoint
 * (ECS/EKS), then the EC2 instance metadata service (IMDSv2).  The first
 * source that is configured decides: if it is configured but fails, that
 * failure is the answer, as in the AWS SDKs, rather than a silent fall
 * through to some other identity.
 *
 * Endpoints can be overridden the way the SDKs allow (AWS_ENDPOINT_URL_STS,
 * AWS_EC2_METADATA_SERVICE_ENDPOINT, AWS_CONTAINER_CREDENTIALS_FULL_URI),
 * which is also how the tests point them at local stand-ins.  Secrets are
 * never logged; messages name the access key id at most. */
#include "s3/s3_private.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <ini.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CREDS_FILE_MAX (1u << 20)
#define IMDS_DEFAULT "http://169.254.169.254"
#define CONTAINER_HOST "http://169.254.170.2"

void s3_credentials_clear(struct s3_credentials *cr)
{
    free(cr->access_key);
    util_wipe_free(cr->secret_key);
    util_wipe_free(cr->session_token);
    memset(cr, 0, sizeof(*cr));
}

void s3_profile_clear(struct s3_profile *p)
{
    s3_credentials_clear(&p->creds);
    free(p->region);
    free(p->role_arn);
    free(p->web_identity_token_file);
    free(p->role_session_name);
    memset(p, 0, sizeof(*p));
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* ---- passwd_file ------------------------------------------------------- */

static int set_pair(struct s3_credentials *out, const char *ak, size_t aklen, const char *sk)
{
    s3_credentials_clear(out);
    out->access_key = util_strndup(ak, aklen);
    out->secret_key = strdup(sk);
    return out->access_key && out->secret_key ? 0 : ENOMEM;
}

int s3_creds_parse_passwd(const char *text, const char *bucket, struct s3_credentials *out,
                          const char **why)
{
    memset(out, 0, sizeof(*out));
    char *copy = strdup(text);
    if (!copy)
        return ENOMEM;
    bool have_general = false, have_bucket = false;
    int rc = 0;
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line && !rc;
         line = strtok_r(NULL, "\n", &save)) {
        line = util_trim(line);
        if (!*line || *line == '#')
            continue;
        char *c1 = strchr(line, ':');
        if (!c1) {
            *why = "a line is not ACCESS_KEY:SECRET_KEY";
            rc = EINVAL;
            break;
        }
        char *c2 = strchr(c1 + 1, ':');
        if (c2) { /* BUCKET:ACCESS:SECRET */
            if (bucket && (size_t)(c1 - line) == strlen(bucket) &&
                strncmp(line, bucket, (size_t)(c1 - line)) == 0) {
                rc = set_pair(out, c1 + 1, (size_t)(c2 - c1 - 1), c2 + 1);
                have_bucket = true;
            }
        } else if (!have_bucket && !have_general) {
            rc = set_pair(out, line, (size_t)(c1 - line), c1 + 1);
            have_general = true;
        }
    }
    util_wipe_free(copy);
    if (!rc && !have_bucket && !have_general) {
        *why = "no ACCESS_KEY:SECRET_KEY line for this bucket";
        rc = EINVAL;
    }
    if (!rc && (!*out->access_key || !*out->secret_key)) {
        *why = "the access key or the secret key is empty";
        rc = EINVAL;
    }
    if (rc)
        s3_credentials_clear(out);
    return rc;
}

/* ---- shared config files ------------------------------------------------ */

struct profile_parse {
    const char *profile;
    bool config_file; /* sections are "profile NAME" there, except default */
    bool found;
    struct s3_profile *out;
};

static bool section_matches(const struct profile_parse *pp, const char *section)
{
    if (!pp->config_file || strcmp(pp->profile, "default") == 0)
        if (strcmp(section, pp->profile) == 0)
            return true;
    if (pp->config_file && strncmp(section, "profile ", 8) == 0) {
        const char *name = section + 8;
        while (*name == ' ')
            name++;
        return strcmp(name, pp->profile) == 0;
    }
    return false;
}

static int replace_str(char **dst, const char *v)
{
    char *n = strdup(v);
    if (!n)
        return 0;
    free(*dst);
    *dst = n;
    return 1;
}

static int profile_handler(void *user, const char *section, const char *name, const char *value)
{
    struct profile_parse *pp = user;
    if (!section_matches(pp, section))
        return 1;
    pp->found = true;
    struct s3_profile *p = pp->out;
    if (strcmp(name, "aws_access_key_id") == 0)
        return replace_str(&p->creds.access_key, value);
    if (strcmp(name, "aws_secret_access_key") == 0) {
        util_wipe_free(p->creds.secret_key);
        p->creds.secret_key = NULL;
        return replace_str(&p->creds.secret_key, value);
    }
    if (strcmp(name, "aws_session_token") == 0)
        return replace_str(&p->creds.session_token, value);
    if (strcmp(name, "region") == 0)
        return replace_str(&p->region, value);
    if (strcmp(name, "role_arn") == 0)
        return replace_str(&p->role_arn, value);
    if (strcmp(name, "web_identity_token_file") == 0)
        return replace_str(&p->web_identity_token_file, value);
    if (strcmp(name, "role_session_name") == 0)
        return replace_str(&p->role_session_name, value);
    return 1;
}

int s3_creds_parse_profile(const char *credentials_text, const char *config_text,
                           const char *profile, struct s3_profile *out)
{
    memset(out, 0, sizeof(*out));
    struct profile_parse pp = {.profile = profile, .out = out};
    /* The config file first, so that keys in the credentials file win. */
    if (config_text) {
        pp.config_file = true;
        if (ini_parse_string(config_text, profile_handler, &pp) < 0)
            return ENOMEM;
    }
    if (credentials_text) {
        pp.config_file = false;
        if (ini_parse_string(credentials_text, profile_handler, &pp) < 0)
            return ENOMEM;
    }
    return pp.found ? 0 : ENOENT;
}

static char *home_path(const char *env_name, const char *rel)
{
    const char *p = env(env_name);
    if (p)
        return strdup(p);
    const char *home = env("HOME");
    struct buf b = BUF_INIT;
    if (buf_printf(&b, "%s/%s", home ? home : "/root", rel))
        return NULL;
    return buf_steal(&b);
}

static const char *profile_name(const char *profile)
{
    if (profile && *profile)
        return profile;
    const char *p = env("AWS_PROFILE");
    return p ? p : "default";
}

/* Load the named profile from the shared files.  ENOENT when neither file
 * has it. */
static int load_profile(const char *profile, struct s3_profile *out)
{
    char *cred_path = home_path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    char *conf_path = home_path("AWS_CONFIG_FILE", ".aws/config");
    char *cred = NULL, *conf = NULL;
    int rc = ENOMEM;
    if (cred_path && conf_path) {
        if (util_read_file(cred_path, CREDS_FILE_MAX, &cred, NULL))
            cred = NULL;
        if (util_read_file(conf_path, CREDS_FILE_MAX, &conf, NULL))
            conf = NULL;
        rc = s3_creds_parse_profile(cred, conf, profile, out);
    }
    util_wipe_free(cred);
    free(conf);
    free(cred_path);
    free(conf_path);
    return rc;
}

char *s3_creds_default_region(const char *profile)
{
    const char *r = env("AWS_REGION");
    if (!r)
        r = env("AWS_DEFAULT_REGION");
    if (r)
        return strdup(r);
    struct s3_profile p;
    char *out = NULL;
    if (load_profile(profile_name(profile), &p) == 0) {
        out = p.region;
        p.region = NULL;
    }
    s3_profile_clear(&p);
    return out;
}

/* ---- JSON (container, IMDS) -------------------------------------------- */

int s3_creds_parse_sts(const char *xml, size_t len, struct s3_credentials *out,
                       struct s3_error *err)
{
    int rc = s3_xml_parse_sts(xml, len, out, err);
    if (rc == 0 && (!out->access_key || !out->secret_key))
        rc = EPROTO;
    if (rc)
        s3_credentials_clear(out);
    return rc;
}

int s3_creds_parse_json(const char *json, size_t len, struct s3_credentials *out)
{
    memset(out, 0, sizeof(*out));
    struct json_tokener *tok = json_tokener_new();
    if (!tok)
        return ENOMEM;
    struct json_object *root = json_tokener_parse_ex(tok, json, (int)len);
    json_tokener_free(tok);
    if (!root || !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return EPROTO;
    }
    struct json_object *v;
    int rc = 0;
    const char *names[] = {"AccessKeyId", "SecretAccessKey", "Token"};
    char **dst[] = {&out->access_key, &out->secret_key, &out->session_token};
    for (int i = 0; i < 3 && !rc; i++)
        if (json_object_object_get_ex(root, names[i], &v) &&
            json_object_is_type(v, json_type_string))
            if (!(*dst[i] = strdup(json_object_get_string(v))))
                rc = ENOMEM;
    if (json_object_object_get_ex(root, "Expiration", &v) &&
        json_object_is_type(v, json_type_string))
        util_parse_iso8601(json_object_get_string(v), &out->expiration);
    json_object_put(root);
    if (!rc && (!out->access_key || !out->secret_key))
        rc = EPROTO;
    if (rc)
        s3_credentials_clear(out);
    return rc;
}

/* ---- small HTTP helper for the credential endpoints --------------------- */

static int fetch_body(struct http_request *req, const void *data, size_t len)
{
    struct buf *b = req->arg;
    if (b->len + len > CREDS_FILE_MAX)
        return EFBIG;
    return buf_append(b, data, len);
}

/* One request; the body lands in *body.  0 only on a 2xx. */
static int fetch(struct http_engine *http, const char *method, const char *url,
                 struct curl_slist *headers, const char *payload, struct buf *body, long *status,
                 char *why, size_t why_len, const char *what)
{
    struct http_request req = {
        .method = method,
        .url = url,
        .headers = headers,
        .body = payload,
        .body_len = payload ? strlen(payload) : 0,
        .on_body = fetch_body,
        .arg = body,
    };
    buf_clear(body);
    int rc = http_perform(http, &req);
    *status = req.status;
    if (rc) {
        snprintf(why, why_len, "%s: %s (%s)", what, url, req.error_text);
        return rc;
    }
    if (req.status < 200 || req.status > 299) {
        snprintf(why, why_len, "%s: %s answered HTTP %ld", what, url, req.status);
        return EACCES;
    }
    return 0;
}

/* ---- web identity ------------------------------------------------------- */

static int append_form(struct buf *b, const char *name, const char *value)
{
    int rc = buf_printf(b, "%s%s=", b->len ? "&" : "", name);
    return rc ? rc : util_pct_encode(b, value, strlen(value), false);
}

static int web_identity(const struct s3_creds_request *rq, const char *role_arn,
                        const char *token_file, const char *session_name,
                        struct s3_credentials *out, char *why, size_t why_len)
{
    char *token = NULL;
    int rc = util_read_file(token_file, CREDS_FILE_MAX, &token, NULL);
    if (rc) {
        snprintf(why, why_len, "web identity: cannot read token file %s: %s", token_file,
                 strerror(rc));
        return EACCES;
    }
    util_trim(token);
    struct buf url = BUF_INIT, form = BUF_INIT, body = BUF_INIT;
    const char *sts = env("AWS_ENDPOINT_URL_STS");
    if (sts)
        rc = buf_puts(&url, sts);
    else if (rq->region)
        rc = buf_printf(&url, "https://sts.%s.amazonaws.com/", rq->region);
    else
        rc = buf_puts(&url, "https://sts.amazonaws.com/");
    if (!rc)
        rc = append_form(&form, "Action", "AssumeRoleWithWebIdentity");
    if (!rc)
        rc = append_form(&form, "Version", "2011-06-15");
    if (!rc)
        rc = append_form(&form, "RoleArn", role_arn);
    if (!rc)
        rc = append_form(&form, "RoleSessionName", session_name ? session_name : "pailfs");
    if (!rc)
        rc = append_form(&form, "WebIdentityToken", token);
    struct curl_slist *h =
        curl_slist_append(NULL, "Content-Type: application/x-www-form-urlencoded");
    long status = 0;
    if (!rc && h)
        rc = fetch(rq->http, "POST", url.data, h, form.data, &body, &status, why, why_len,
                   "web identity (STS AssumeRoleWithWebIdentity)");
    if (!rc) {
        struct s3_error err = {0};
        rc = s3_creds_parse_sts(body.data, body.len, out, &err);
        if (rc)
            snprintf(why, why_len, "web identity: STS refused role %s: %s %s", role_arn, err.code,
                     err.message);
    } else if (status && body.len) {
        struct s3_error err = {0};
        if (s3_xml_parse_error(body.data, body.len, &err) == 0 ||
            s3_creds_parse_sts(body.data, body.len, out, &err) == EACCES)
            snprintf(why, why_len, "web identity: STS refused role %s: HTTP %ld %s %s", role_arn,
                     status, err.code, err.message);
    }
    curl_slist_free_all(h);
    util_wipe_free(token);
    if (form.data)
        memset(form.data, 0, form.len);
    buf_free(&form);
    buf_free(&url);
    buf_free(&body);
    return rc ? EACCES : 0;
}

/* ---- container endpoint ------------------------------------------------- */

static int container(const struct s3_creds_request *rq, struct s3_credentials *out, char *why,
                     size_t why_len)
{
    struct buf url = BUF_INIT, body = BUF_INIT, auth = BUF_INIT;
    const char *rel = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    int rc = rel ? buf_printf(&url, "%s%s", CONTAINER_HOST, rel) : buf_puts(&url, full);
    const char *token_file = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    const char *token = env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    char *file_token = NULL;
    if (!rc && token_file) {
        if (util_read_file(token_file, CREDS_FILE_MAX, &file_token, NULL)) {
            snprintf(why, why_len, "container credentials: cannot read %s", token_file);
            rc = EACCES;
        } else {
            token = util_trim(file_token);
        }
    }
    struct curl_slist *h = NULL;
    if (!rc && token) {
        rc = buf_printf(&auth, "Authorization: %s", token);
        if (!rc && !(h = curl_slist_append(NULL, auth.data)))
            rc = ENOMEM;
    }
    long status;
    if (!rc)
        rc = fetch(rq->http, "GET", url.data, h, NULL, &body, &status, why, why_len,
                   "container credentials");
    if (!rc && (rc = s3_creds_parse_json(body.data, body.len, out)))
        snprintf(why, why_len, "container credentials: %s returned no credentials", url.data);
    curl_slist_free_all(h);
    util_wipe_free(file_token);
    if (auth.data)
        memset(auth.data, 0, auth.len);
    buf_free(&auth);
    buf_free(&url);
    buf_free(&body);
    return rc ? EACCES : 0;
}

/* ---- IMDSv2 ------------------------------------------------------------- */

static int imds(const struct s3_creds_request *rq, struct s3_credentials *out, char *why,
                size_t why_len)
{
    const char *base = env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    if (!base)
        base = IMDS_DEFAULT;
    size_t blen = strlen(base);
    while (blen && base[blen - 1] == '/')
        blen--;
    struct buf url = BUF_INIT, body = BUF_INIT, th = BUF_INIT;
    struct curl_slist *h = curl_slist_append(NULL, "X-aws-ec2-metadata-token-ttl-seconds: 21600");
    long status;
    char *role = NULL;
    int rc = h ? buf_printf(&url, "%.*s/latest/api/token", (int)blen, base) : ENOMEM;
    if (!rc)
        rc = fetch(rq->http, "PUT", url.data, h, "", &body, &status, why, why_len,
                   "instance metadata (IMDSv2 token)");
    curl_slist_free_all(h);
    h = NULL;
    if (!rc)
        rc = buf_printf(&th, "X-aws-ec2-metadata-token: %s", util_trim(body.data));
    if (!rc && !(h = curl_slist_append(NULL, th.data)))
        rc = ENOMEM;
    buf_clear(&url);
    if (!rc)
        rc = buf_printf(&url, "%.*s/latest/meta-data/iam/security-credentials/", (int)blen, base);
    if (!rc)
        rc = fetch(rq->http, "GET", url.data, h, NULL, &body, &status, why, why_len,
                   "instance metadata (role name)");
    if (!rc) {
        char *line = util_trim(body.data);
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (!*line) {
            snprintf(why, why_len, "instance metadata: no IAM role is attached to the instance");
            rc = EACCES;
        } else if (!(role = strdup(line))) {
            rc = ENOMEM;
        }
    }
    buf_clear(&url);
    if (!rc)
        rc = buf_printf(&url, "%.*s/latest/meta-data/iam/security-credentials/%s", (int)blen, base,
                        role);
    if (!rc)
        rc = fetch(rq->http, "GET", url.data, h, NULL, &body, &status, why, why_len,
                   "instance metadata (role credentials)");
    if (!rc && (rc = s3_creds_parse_json(body.data, body.len, out)))
        snprintf(why, why_len, "instance metadata: role %s returned no credentials", role);
    curl_slist_free_all(h);
    if (th.data)
        memset(th.data, 0, th.len);
    free(role);
    buf_free(&th);
    buf_free(&url);
    buf_free(&body);
    return rc ? EACCES : 0;
}

/* The IMDS must not hold up a machine that is not on EC2: a short connect
 * timeout on its own engine. */
static int imds_quick(const struct s3_creds_request *rq, struct s3_credentials *out, char *why,
                      size_t why_len)
{
    struct http_engine_options o = {
        .max_connections = 2, .connect_timeout_ms = 1000, .stall_timeout_s = 2};
    struct http_engine *eng;
    int rc = http_engine_new(&o, &eng);
    if (rc)
        return rc;
    struct s3_creds_request q = *rq;
    q.http = eng;
    rc = imds(&q, out, why, why_len);
    http_engine_free(eng);
    return rc;
}

/* ---- the chain ---------------------------------------------------------- */

static bool env_bool(const char *name)
{
    const char *v = env(name);
    return v && (strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

int s3_secret_file_read(const char *what, const char *path, size_t max, char **text, size_t *len,
                        char *why, size_t why_len)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        snprintf(why, why_len, "%s %s: %s", what, path, strerror(errno));
        return EACCES;
    }
    if (st.st_uid != geteuid()) {
        snprintf(why, why_len,
                 "%s %s belongs to uid %u, not to the mounting user (uid %u): "
                 "a secret must be the user's own",
                 what, path, (unsigned)st.st_uid, (unsigned)geteuid());
        return EACCES;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(why, why_len,
                 "%s %s is readable by group or others (mode %03o): "
                 "chmod 600 it",
                 what, path, (unsigned)(st.st_mode & 0777));
        return EACCES;
    }
    int rc = util_read_file(path, max, text, len);
    if (rc) {
        snprintf(why, why_len, "%s %s: %s", what, path, strerror(rc));
        return EACCES;
    }
    return 0;
}

int s3_sse_c_parse_key(const char *data, size_t len, unsigned char key[S3_SSE_C_KEY_LEN],
                       const char **why)
{
    if (len == S3_SSE_C_KEY_LEN) {
        memcpy(key, data, S3_SSE_C_KEY_LEN);
        return 0;
    }
    while (len && isspace((unsigned char)data[len - 1]))
        len--;
    while (len && isspace((unsigned char)*data)) {
        data++;
        len--;
    }
    unsigned char tmp[S3_SSE_C_KEY_LEN + 3];
    size_t got = 0;
    if (len != 44 || util_base64_decode(data, len, tmp, sizeof(tmp), &got) ||
        got != S3_SSE_C_KEY_LEN) {
        *why = "not a 256-bit key: expected exactly 32 bytes, or their base64 (44 characters)";
        explicit_bzero(tmp, sizeof(tmp));
        return EINVAL;
    }
    memcpy(key, tmp, S3_SSE_C_KEY_LEN);
    explicit_bzero(tmp, sizeof(tmp));
    return 0;
}

static int from_passwd_file(const char *path, const char *bucket, struct s3_credentials *out,
                            char *why, size_t why_len)
{
    char *text = NULL;
    int rc = s3_secret_file_read("passwd_file", path, CREDS_FILE_MAX, &text, NULL, why, why_len);
    if (rc)
        return rc;
    const char *reason = "";
    rc = s3_creds_parse_passwd(text, bucket, out, &reason);
    util_wipe_free(text);
    if (rc) {
        snprintf(why, why_len, "passwd_file %s: %s", path, reason);
        return EACCES;
    }
    return 0;
}

int s3_creds_refresh(const struct s3_creds_request *rq, const char *source,
                     struct s3_credentials *out, char *why, size_t why_len)
{
    if (strcmp(source, "container") == 0)
        return container(rq, out, why, why_len);
    if (strcmp(source, "imds") == 0)
        return imds_quick(rq, out, why, why_len);
    if (strcmp(source, "web-identity") == 0 || strncmp(source, "profile-web-identity:", 21) == 0) {
        const char *arn = env("AWS_ROLE_ARN"), *file = env("AWS_WEB_IDENTITY_TOKEN_FILE");
        const char *session = env("AWS_ROLE_SESSION_NAME");
        struct s3_profile p = {0};
        if (source[0] == 'p' && load_profile(source + 21, &p) == 0) {
            arn = p.role_arn;
            file = p.web_identity_token_file;
            session = p.role_session_name;
        }
        int rc = arn && file ? web_identity(rq, arn, file, session, out, why, why_len) : EACCES;
        s3_profile_clear(&p);
        return rc;
    }
    snprintf(why, why_len, "credentials from %s cannot be refreshed", source);
    return EINVAL;
}

/* The keys of the environment, when AWS_ACCESS_KEY_ID and
 * AWS_SECRET_ACCESS_KEY are set (*found): 0 or ENOMEM. */
static int from_env(struct s3_credentials *out, bool *found)
{
    const char *ak = env("AWS_ACCESS_KEY_ID"), *sk = env("AWS_SECRET_ACCESS_KEY");
    *found = ak && sk;
    if (!*found)
        return 0;
    out->access_key = strdup(ak);
    out->secret_key = strdup(sk);
    const char *tok = env("AWS_SESSION_TOKEN");
    if (tok)
        out->session_token = strdup(tok);
    if (!out->access_key || !out->secret_key || (tok && !out->session_token)) {
        s3_credentials_clear(out);
        return ENOMEM;
    }
    return 0;
}

/* Profile `profile` of the shared files, when it has keys or a web
 * identity role (*found): 0 or the web identity's errno. */
static int from_profile(const struct s3_creds_request *rq, const char *profile,
                        struct s3_credentials *out, char *source, size_t source_len, char *why,
                        size_t why_len, bool *found)
{
    struct s3_profile p;
    int rc = load_profile(profile, &p);
    *found = false;
    if (rc == 0 && p.creds.access_key && p.creds.secret_key) {
        *found = true;
        snprintf(source, source_len, "profile:%s", profile);
        *out = p.creds;
        memset(&p.creds, 0, sizeof(p.creds));
    } else if (rc == 0 && p.role_arn && p.web_identity_token_file) {
        *found = true;
        snprintf(source, source_len, "profile-web-identity:%s", profile);
        rc = web_identity(rq, p.role_arn, p.web_identity_token_file, p.role_session_name, out, why,
                          why_len);
    }
    s3_profile_clear(&p);
    return *found ? rc : 0;
}

/* What the platform gives, in order: a web identity or a container's
 * credentials named by the environment, then the instance metadata
 * (unless disabled).  EACCES with *why naming every source tried. */
static int from_platform(const struct s3_creds_request *rq, const char *profile,
                         struct s3_credentials *out, char *source, size_t source_len, char *why,
                         size_t why_len)
{
    if (env("AWS_WEB_IDENTITY_TOKEN_FILE") && env("AWS_ROLE_ARN")) {
        snprintf(source, source_len, "web-identity");
        return web_identity(rq, env("AWS_ROLE_ARN"), env("AWS_WEB_IDENTITY_TOKEN_FILE"),
                            env("AWS_ROLE_SESSION_NAME"), out, why, why_len);
    }
    if (env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") ||
        env("AWS_CONTAINER_CREDENTIALS_FULL_URI")) {
        snprintf(source, source_len, "container");
        return container(rq, out, why, why_len);
    }
    if (!env_bool("AWS_EC2_METADATA_DISABLED")) {
        snprintf(source, source_len, "imds");
        char imds_why[256] = "";
        if (imds_quick(rq, out, imds_why, sizeof(imds_why)) == 0)
            return 0;
        snprintf(why, why_len,
                 "no credentials found: tried passwd_file (not given), environment "
                 "(AWS_ACCESS_KEY_ID unset), profile %s (not in the shared files), web "
                 "identity and container (not configured), %s",
                 profile, imds_why);
        return EACCES;
    }
    snprintf(why, why_len,
             "no credentials found: tried passwd_file (not given), environment "
             "(AWS_ACCESS_KEY_ID unset), profile %s (not in the shared files), web identity "
             "and container (not configured); instance metadata is disabled",
             profile);
    return EACCES;
}

int s3_creds_resolve(const struct s3_creds_request *rq, struct s3_credentials *out, char *source,
                     size_t source_len, char *why, size_t why_len)
{
    memset(out, 0, sizeof(*out));
    why[0] = '\0';
    if (rq->passwd_file) {
        snprintf(source, source_len, "passwd_file");
        return from_passwd_file(rq->passwd_file, rq->bucket, out, why, why_len);
    }
    bool found;
    int rc = from_env(out, &found);
    if (found) {
        snprintf(source, source_len, "env");
        return rc;
    }
    const char *profile = profile_name(rq->profile);
    rc = from_profile(rq, profile, out, source, source_len, why, why_len, &found);
    if (found)
        return rc;
    if (rq->profile && *rq->profile) {
        snprintf(why, why_len, "profile %s has no credentials in the shared files", profile);
        return EACCES;
    }
    return from_platform(rq, profile, out, source, source_len, why, why_len);
}

/* creds.c — where credentials come from: the chain AWS tools use.
 *
 * Order: an explicit s3fs-style passwd_file, then the environment
 * (AWS_ACCESS_KEY_ID…), then the shared files (~/.aws/credentials and
 * ~/.aws/config, profile from -o profile= or AWS_PROFILE), then web identity
 * (a token file exchanged at STS for a role), then the container endpoint
 * (ECS/EKS), then the EC2 instance metadata service (IMDSv2).  A profile
 * may assume a role with another profile's credentials (role_arn +
 * source_profile, STS AssumeRole signed with them) or run a
 * credential_process; both are run again before their credentials
 * expire, as the STS and IMDS ones are fetched again.  The first
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
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CREDS_FILE_MAX (1u << 20)
#define IMDS_DEFAULT "http://169.254.169.254"
#define CONTAINER_HOST "http://169.254.170.2"
#define S3_PROCESS_TIMEOUT_MS 60000 /* a credential_process that hangs */

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
    free(p->source_profile);
    free(p->external_id);
    free(p->duration_seconds);
    free(p->mfa_serial);
    free(p->credential_source);
    free(p->credential_process);
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
    static const struct {
        const char *name;
        size_t offset;
    } more[] = {
        {"role_session_name", offsetof(struct s3_profile, role_session_name)},
        {"source_profile", offsetof(struct s3_profile, source_profile)},
        {"external_id", offsetof(struct s3_profile, external_id)},
        {"duration_seconds", offsetof(struct s3_profile, duration_seconds)},
        {"mfa_serial", offsetof(struct s3_profile, mfa_serial)},
        {"credential_source", offsetof(struct s3_profile, credential_source)},
        {"credential_process", offsetof(struct s3_profile, credential_process)},
    };
    for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++)
        if (strcmp(name, more[i].name) == 0)
            return replace_str((char **)((char *)p + more[i].offset), value);
    return 1;
}

typedef int (*ini_fn)(void *user, const char *section, const char *name, const char *value);

static char *rstrip(char *s)
{
    size_t n = strlen(s);
    while (n && strchr(" \t\r\v\f", s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* Cut s at a ';' that follows white space (an inline comment). */
static char *cut_comment(char *s)
{
    for (char *p = s; *p; p++)
        if (*p == ';' && p > s && (p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            break;
        }
    return rstrip(s);
}

/* The lines of a shared file, read as inih reads them but with no limit
 * on a line's length (inih cut lines at 200 bytes: real session tokens
 * and credential_process commands are longer): "[SECTION]"; "NAME = VALUE"
 * (or ':'), a ';' after white space starting a comment; a line starting
 * with '#' or ';' is a comment; an indented line continues the last NAME
 * (the nested "s3 =" settings), given to fn as another value of it; any
 * other line is skipped.  0, or ENOMEM (fn failed, or no memory). */
static int ini_walk(const char *text, ini_fn fn, void *user)
{
    char *copy = strdup(text);
    if (!copy)
        return ENOMEM;
    const char *section = "", *prev = NULL;
    char *line = copy;
    if (strncmp(line, "\xEF\xBB\xBF", 3) == 0)
        line += 3;
    int rc = 0;
    while (line && !rc) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        char *start = rstrip(line) + strspn(line, " \t\r\v\f");
        if (!*start || *start == '#' || *start == ';') {
            /* empty or a comment */
        } else if (start > line && prev) {
            if (*cut_comment(start))
                rc = fn(user, section, prev, start) ? 0 : ENOMEM;
        } else if (*start == '[') {
            char *end = strchr(start + 1, ']');
            if (end) {
                *end = '\0';
                section = start + 1;
                prev = NULL;
            }
        } else if (start[strcspn(start, "=:")]) {
            char *sep = start + strcspn(start, "=:");
            *sep = '\0';
            char *value = sep + 1 + strspn(sep + 1, " \t");
            prev = rstrip(start);
            rc = fn(user, section, prev, cut_comment(value)) ? 0 : ENOMEM;
        }
        line = nl ? nl + 1 : NULL;
    }
    util_wipe_free(copy); /* it held the secrets */
    return rc;
}

int s3_creds_parse_profile(const char *credentials_text, const char *config_text,
                           const char *profile, struct s3_profile *out)
{
    memset(out, 0, sizeof(*out));
    struct profile_parse pp = {.profile = profile, .out = out};
    int rc = 0;
    /* The config file first, so that keys in the credentials file win. */
    if (config_text) {
        pp.config_file = true;
        rc = ini_walk(config_text, profile_handler, &pp);
    }
    if (credentials_text && !rc) {
        pp.config_file = false;
        rc = ini_walk(credentials_text, profile_handler, &pp);
    }
    if (rc)
        s3_profile_clear(out);
    return rc ? rc : pp.found ? 0 : ENOENT;
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

/* ---- credential_process ------------------------------------------------- */

/* A string member of `root` into *dst: absent is fine unless required;
 * anything but a string, an empty required one, or a value holding a
 * control character (a NUL included) is refused with f->bad. */
struct process_field {
    const char *name;
    bool required;
    const char *missing, *bad;
};

static int process_field(struct json_object *root, const struct process_field *f, char **dst,
                         const char **why)
{
    struct json_object *v;
    if (!json_object_object_get_ex(root, f->name, &v)) {
        if (f->required)
            *why = f->missing;
        return f->required ? EPROTO : 0;
    }
    const char *text = json_object_get_string(v);
    if (!json_object_is_type(v, json_type_string) || (f->required && !*text) ||
        util_has_control(text) || strlen(text) != (size_t)json_object_get_string_len(v)) {
        *why = f->bad;
        return EPROTO;
    }
    return (*dst = strdup(text)) ? 0 : ENOMEM;
}

int s3_creds_parse_process(const char *json, size_t len, int64_t now, struct s3_credentials *out,
                           const char **why)
{
    memset(out, 0, sizeof(*out));
    if (len > S3_PROCESS_OUTPUT_MAX) {
        *why = "it printed more than 64 KiB";
        return EPROTO;
    }
    struct json_tokener *tok = json_tokener_new();
    if (!tok)
        return ENOMEM;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    struct json_object *root = json_tokener_parse_ex(tok, json, (int)len);
    size_t used = root ? json_tokener_get_parse_end(tok) : 0;
    json_tokener_free(tok);
    while (root && used < len && strchr(" \t\r\n", json[used]) && json[used])
        used++;
    int rc = 0;
    struct json_object *v;
    char *expiration = NULL;
    *why = "";
    if (!root || !json_object_is_type(root, json_type_object)) {
        *why = "its output is not a JSON object";
        rc = EPROTO;
    } else if (used != len) {
        *why = "its output has more after the JSON object";
        rc = EPROTO;
    } else if (!json_object_object_get_ex(root, "Version", &v) ||
               !json_object_is_type(v, json_type_int) || json_object_get_int64(v) != 1) {
        *why = "its output has no \"Version\": 1";
        rc = EPROTO;
    }
    static const struct process_field fields[] = {
        {"AccessKeyId", true, "no AccessKeyId", "AccessKeyId is not a usable string"},
        {"SecretAccessKey", true, "no SecretAccessKey", "SecretAccessKey is not a usable string"},
        {"SessionToken", false, "", "SessionToken is not a usable string"},
        {"Expiration", false, "", "Expiration is not a string"},
    };
    char **dst[] = {&out->access_key, &out->secret_key, &out->session_token, &expiration};
    for (size_t i = 0; i < 4 && !rc; i++)
        rc = process_field(root, &fields[i], dst[i], why);
    if (!rc && expiration && util_parse_iso8601(expiration, &out->expiration)) {
        *why = "Expiration is not an ISO 8601 time";
        rc = EPROTO;
    } else if (!rc && expiration && out->expiration <= now) {
        *why = "the credentials it printed have already expired";
        rc = EPROTO;
    }
    free(expiration);
    json_object_put(root);
    if (rc)
        s3_credentials_clear(out);
    return rc;
}

void s3_creds_free_words(char **argv)
{
    for (size_t i = 0; argv && argv[i]; i++)
        free(argv[i]);
    free(argv);
}

/* One more word of the command, taken from `word`; its buffer is reset. */
static int push_word(char ***argv, size_t *n, size_t *cap, struct buf *word)
{
    if (util_grow((void **)argv, cap, *n + 2, sizeof(**argv)))
        return ENOMEM;
    char *w = word->data ? buf_steal(word) : strdup("");
    if (!w)
        return ENOMEM;
    (*argv)[(*n)++] = w;
    (*argv)[*n] = NULL;
    return 0;
}

int s3_creds_split_command(const char *cmd, char ***argv_out, const char **why)
{
    char **argv = NULL;
    size_t n = 0, cap = 0;
    struct buf word = BUF_INIT;
    bool in_word = false;
    int rc = 0;
    *why = "";
    for (const char *p = cmd; !rc && *p; p++) { /* rc first: an open " leaves p at the NUL */
        if (*p == ' ' || *p == '\t' || *p == '\n') {
            if (in_word)
                rc = push_word(&argv, &n, &cap, &word);
            in_word = false;
            continue;
        }
        in_word = true;
        if (*p == '\'') {
            const char *end = strchr(p + 1, '\'');
            if (!end) {
                *why = "a ' is not closed";
                rc = EINVAL;
            } else {
                rc = buf_append(&word, p + 1, (size_t)(end - p - 1));
                p = end;
            }
        } else if (*p == '"') {
            for (p++; *p && *p != '"' && !rc; p++) {
                if (*p == '\\' && p[1] && strchr("$`\"\\\n", p[1]))
                    p++;
                rc = buf_append(&word, p, 1);
            }
            if (!rc && !*p) {
                *why = "a \" is not closed";
                rc = EINVAL;
            }
        } else if (*p == '\\') {
            if (!p[1]) {
                *why = "it ends with a backslash";
                rc = EINVAL;
            } else {
                rc = buf_append(&word, ++p, 1);
            }
        } else {
            rc = buf_append(&word, p, 1);
        }
    }
    if (!rc && in_word)
        rc = push_word(&argv, &n, &cap, &word);
    if (!rc && n == 0) {
        *why = "it is empty";
        rc = EINVAL;
    }
    buf_free(&word);
    if (rc) {
        s3_creds_free_words(argv);
        argv = NULL;
    }
    *argv_out = argv;
    return rc;
}

/* Read the child's output until it closes its end, the output passes
 * the bound, or the deadline.  0, EFBIG, ETIMEDOUT or errno. */
static int read_child(int fd, struct buf *out, uint64_t deadline_ms)
{
    for (;;) {
        uint64_t now = util_now_ms();
        if (now >= deadline_ms)
            return ETIMEDOUT;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = poll(&pfd, 1, (int)(deadline_ms - now));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return ETIMEDOUT;
        char chunk[4096];
        ssize_t got = read(fd, chunk, sizeof(chunk));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return errno;
        if (got == 0)
            return 0;
        if (out->len + (size_t)got > S3_PROCESS_OUTPUT_MAX)
            return EFBIG;
        if (buf_append(out, chunk, (size_t)got))
            return ENOMEM;
    }
}

/* Wait for the child to exit, until the deadline: one that closed its
 * output but lingers must not hold the mount.  0 (status set),
 * ETIMEDOUT, or errno. */
static int wait_child(pid_t pid, int *status, uint64_t deadline_ms)
{
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 0;
        if (r < 0 && errno != EINTR)
            return errno;
        if (util_now_ms() >= deadline_ms)
            return ETIMEDOUT;
        util_sleep_ms(10);
    }
}

/* Run a credential_process: its words (s3_creds_split_command) executed
 * without a shell, stdin /dev/null, stderr ours, stdout read into *out
 * (bounded).  0 only when it exited with status 0 within timeout_ms;
 * otherwise it is killed. */
static int run_process(const char *cmd, unsigned timeout_ms, struct buf *out, char *why,
                       size_t why_len)
{
    char **argv = NULL;
    const char *reason = "";
    int rc = s3_creds_split_command(cmd, &argv, &reason);
    if (rc) {
        snprintf(why, why_len, "credential_process: cannot split the command: %s", reason);
        return EACCES;
    }
    int fds[2];
    posix_spawn_file_actions_t fa;
    pid_t pid = 0;
    if (pipe2(fds, O_CLOEXEC)) {
        rc = errno;
        snprintf(why, why_len, "credential_process: pipe: %s", strerror(rc));
        s3_creds_free_words(argv);
        return EACCES;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    extern char **environ;
    rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc) {
        snprintf(why, why_len, "credential_process: cannot run %s: %s", argv[0], strerror(rc));
        close(fds[0]);
        s3_creds_free_words(argv);
        return EACCES;
    }
    uint64_t deadline = util_now_ms() + timeout_ms;
    rc = read_child(fds[0], out, deadline);
    close(fds[0]);
    int status = 0;
    if (!rc)
        rc = wait_child(pid, &status, deadline);
    if (rc) {
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    if (rc == EFBIG)
        snprintf(why, why_len, "credential_process %s printed more than %u KiB", argv[0],
                 S3_PROCESS_OUTPUT_MAX >> 10);
    else if (rc == ETIMEDOUT)
        snprintf(why, why_len, "credential_process %s did not finish within %u s (killed)", argv[0],
                 timeout_ms / 1000);
    else if (rc)
        snprintf(why, why_len, "credential_process %s: %s", argv[0], strerror(rc));
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        snprintf(why, why_len, "credential_process %s failed (%s %d)", argv[0],
                 WIFEXITED(status) ? "exit status" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
        rc = EACCES;
    }
    s3_creds_free_words(argv);
    return rc ? EACCES : 0;
}

/* Credentials from a credential_process (profile `profile` names it). */
static int from_process(const struct s3_creds_request *rq, const char *profile, const char *cmd,
                        struct s3_credentials *out, char *why, size_t why_len)
{
    struct buf text = BUF_INIT;
    unsigned timeout_ms = rq->process_timeout_ms ? rq->process_timeout_ms : S3_PROCESS_TIMEOUT_MS;
    int rc = run_process(cmd, timeout_ms, &text, why, why_len);
    if (!rc) {
        const char *reason = "";
        rc = s3_creds_parse_process(text.data ? text.data : "", text.len, (int64_t)time(NULL), out,
                                    &reason);
        if (rc)
            snprintf(why, why_len, "credential_process of profile %s: %s", profile, reason);
    }
    if (text.data)
        memset(text.data, 0, text.len);
    buf_free(&text);
    return rc ? EACCES : 0;
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

/* The STS endpoint: AWS_ENDPOINT_URL_STS, else the regional one (China's
 * regions are under amazonaws.com.cn). */
static int sts_url(const struct s3_creds_request *rq, struct buf *url)
{
    const char *sts = env("AWS_ENDPOINT_URL_STS");
    if (sts)
        return buf_puts(url, sts);
    if (rq->region)
        return buf_printf(url, "https://sts.%s.amazonaws.com%s/", rq->region,
                          strncmp(rq->region, "cn-", 3) == 0 ? ".cn" : "");
    return buf_puts(url, "https://sts.amazonaws.com/");
}

/* SigV4 headers (service sts) for a POST of `form` to `url`, signed with
 * `signer`, appended to *h.  0, EINVAL (a URL without a host) or ENOMEM. */
static int sts_sign(const struct s3_creds_request *rq, const char *url, const char *form,
                    const struct s3_credentials *signer, struct curl_slist **h)
{
    const char *host = strstr(url, "://");
    if (!host || !host[3])
        return EINVAL;
    host += 3;
    size_t hlen = strcspn(host, "/?#");
    struct buf hostv = BUF_INIT, path = BUF_INIT, auth = BUF_INIT, line = BUF_INIT;
    int rc = buf_append(&hostv, host, hlen);
    size_t plen = strcspn(host + hlen, "?#");
    if (!rc)
        rc = plen ? buf_append(&path, host + hlen, plen) : buf_puts(&path, "/");
    char date[17], hash[65];
    s3_amz_date((int64_t)time(NULL), date);
    util_sha256_hex(form, strlen(form), hash);
    struct s3_kv hdrs[4] = {
        {"host", hostv.data},
        {"content-type", "application/x-www-form-urlencoded"},
        {"x-amz-date", date},
        {"x-amz-security-token", signer->session_token},
    };
    struct s3_sign_input in = {
        .method = "POST",
        .canonical_uri = path.data,
        .headers = hdrs,
        .n_headers = signer->session_token ? 4 : 3,
        .payload_hash = hash,
        .region = rq->region ? rq->region : "us-east-1",
        .service = "sts",
        .amz_date = date,
        .access_key = signer->access_key,
        .secret_key = signer->secret_key,
    };
    if (!rc)
        rc = s3_sigv4_authorization(&auth, &in, NULL);
    const char *names[] = {"Host", "X-Amz-Date", "X-Amz-Security-Token", "Authorization"};
    const char *values[] = {hostv.data, date, signer->session_token, auth.data};
    for (int i = 0; i < 4 && !rc; i++) {
        if (!values[i])
            continue;
        buf_clear(&line);
        rc = buf_printf(&line, "%s: %s", names[i], values[i]);
        struct curl_slist *n = rc ? NULL : curl_slist_append(*h, line.data);
        if (!rc && !n)
            rc = ENOMEM;
        if (n)
            *h = n;
    }
    if (auth.data)
        memset(auth.data, 0, auth.len);
    if (line.data)
        memset(line.data, 0, line.len);
    buf_free(&auth);
    buf_free(&line);
    buf_free(&hostv);
    buf_free(&path);
    return rc;
}

/* One STS call (`action`: AssumeRoleWithWebIdentity, unsigned, or
 * AssumeRole, signed with `signer`) whose form is `form`; its
 * credentials into *out.  `what` starts each message ("web identity"),
 * which names the role but no secret.  0 or EACCES with `why` set. */
static int sts_call(const struct s3_creds_request *rq, const char *what, const char *action,
                    const char *role_arn, struct buf *form, const struct s3_credentials *signer,
                    struct s3_credentials *out, char *why, size_t why_len)
{
    struct buf url = BUF_INIT, body = BUF_INIT, words = BUF_INIT;
    struct curl_slist *h =
        curl_slist_append(NULL, "Content-Type: application/x-www-form-urlencoded");
    int rc = h ? sts_url(rq, &url) : ENOMEM;
    if (!rc && signer && (rc = sts_sign(rq, url.data, form->data, signer, &h)) == EINVAL)
        snprintf(why, why_len, "%s: STS endpoint %s has no host", what, url.data);
    if (!rc)
        rc = buf_printf(&words, "%s (STS %s)", what, action);
    long status = 0;
    if (!rc)
        rc = fetch(rq->http, "POST", url.data, h, form->data, &body, &status, why, why_len,
                   words.data);
    if (!rc) {
        struct s3_error err = {0};
        rc = s3_creds_parse_sts(body.data, body.len, out, &err);
        if (rc)
            snprintf(why, why_len, "%s: STS refused role %s: %s %s", what, role_arn, err.code,
                     err.message);
    } else if (status && body.len) {
        struct s3_error err = {0};
        if (s3_xml_parse_error(body.data, body.len, &err) == 0 ||
            s3_creds_parse_sts(body.data, body.len, out, &err) == EACCES)
            snprintf(why, why_len, "%s: STS refused role %s: HTTP %ld %s %s", what, role_arn,
                     status, err.code, err.message);
    }
    curl_slist_free_all(h);
    if (form->data)
        memset(form->data, 0, form->len);
    buf_free(&url);
    buf_free(&body);
    buf_free(&words);
    return rc ? EACCES : 0;
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
    struct buf form = BUF_INIT;
    rc = append_form(&form, "Action", "AssumeRoleWithWebIdentity");
    if (!rc)
        rc = append_form(&form, "Version", "2011-06-15");
    if (!rc)
        rc = append_form(&form, "RoleArn", role_arn);
    if (!rc)
        rc = append_form(&form, "RoleSessionName", session_name ? session_name : "pailfs");
    if (!rc)
        rc = append_form(&form, "WebIdentityToken", token);
    if (!rc)
        rc = sts_call(rq, "web identity", "AssumeRoleWithWebIdentity", role_arn, &form, NULL, out,
                      why, why_len);
    util_wipe_free(token);
    buf_free(&form);
    return rc ? EACCES : 0;
}

/* DurationSeconds as AssumeRole takes it: 900 to 43200 digits. */
static bool duration_valid(const char *d)
{
    size_t n = strspn(d, "0123456789");
    long v = n && n <= 5 && !d[n] ? strtol(d, NULL, 10) : 0;
    return v >= 900 && v <= 43200;
}

/* STS AssumeRole of profile p's role_arn, signed with `source`. */
static int assume_role(const struct s3_creds_request *rq, const char *profile,
                       const struct s3_profile *p, const struct s3_credentials *source,
                       struct s3_credentials *out, char *why, size_t why_len)
{
    if (p->duration_seconds && !duration_valid(p->duration_seconds)) {
        snprintf(why, why_len, "profile %s: duration_seconds must be a number from 900 to 43200",
                 profile);
        return EACCES;
    }
    struct buf form = BUF_INIT;
    int rc = append_form(&form, "Action", "AssumeRole");
    if (!rc)
        rc = append_form(&form, "Version", "2011-06-15");
    if (!rc)
        rc = append_form(&form, "RoleArn", p->role_arn);
    if (!rc)
        rc = append_form(&form, "RoleSessionName",
                         p->role_session_name ? p->role_session_name : "pailfs");
    if (!rc && p->external_id)
        rc = append_form(&form, "ExternalId", p->external_id);
    if (!rc && p->duration_seconds)
        rc = append_form(&form, "DurationSeconds", p->duration_seconds);
    if (!rc)
        rc = sts_call(rq, "assume role", "AssumeRole", p->role_arn, &form, source, out, why,
                      why_len);
    buf_free(&form);
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

/* The service's base URL, without trailing slashes, into url. */
static int imds_base(struct buf *url)
{
    const char *base = env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    if (!base)
        base = IMDS_DEFAULT;
    size_t blen = strlen(base);
    while (blen && base[blen - 1] == '/')
        blen--;
    return buf_append(url, base, blen);
}

/* IMDSv2: a session token, PUT for first, into *h as the header every
 * metadata GET carries.  0 or an errno with `why` set. */
static int imds_session(const struct s3_creds_request *rq, const char *base, struct curl_slist **h,
                        char *why, size_t why_len)
{
    struct buf url = BUF_INIT, body = BUF_INIT, th = BUF_INIT;
    struct curl_slist *ttl = curl_slist_append(NULL, "X-aws-ec2-metadata-token-ttl-seconds: 21600");
    long status;
    int rc = ttl ? buf_printf(&url, "%s/latest/api/token", base) : ENOMEM;
    if (!rc)
        rc = fetch(rq->http, "PUT", url.data, ttl, "", &body, &status, why, why_len,
                   "instance metadata (IMDSv2 token)");
    if (!rc)
        rc = buf_printf(&th, "X-aws-ec2-metadata-token: %s", util_trim(body.data));
    if (!rc && !(*h = curl_slist_append(NULL, th.data)))
        rc = ENOMEM;
    curl_slist_free_all(ttl);
    if (th.data)
        memset(th.data, 0, th.len);
    if (body.data)
        memset(body.data, 0, body.len);
    buf_free(&th);
    buf_free(&url);
    buf_free(&body);
    return rc;
}

/* GET base+path with the session header h; its first line, trimmed, in
 * *line (malloc'ed).  ENODATA when it is empty. */
static int imds_line(const struct s3_creds_request *rq, const char *base, const char *path,
                     struct curl_slist *h, char **line, char *why, size_t why_len, const char *what)
{
    struct buf url = BUF_INIT, body = BUF_INIT;
    long status;
    int rc = buf_printf(&url, "%s%s", base, path);
    if (!rc)
        rc = fetch(rq->http, "GET", url.data, h, NULL, &body, &status, why, why_len, what);
    if (!rc) {
        char *l = util_trim(body.data);
        l[strcspn(l, "\r\n")] = '\0';
        if (!*l) {
            snprintf(why, why_len, "%s: empty answer", what);
            rc = ENODATA;
        } else if (!(*line = strdup(l))) {
            rc = ENOMEM;
        }
    }
    buf_free(&url);
    buf_free(&body);
    return rc;
}

static int imds(const struct s3_creds_request *rq, struct s3_credentials *out, char *why,
                size_t why_len)
{
    struct buf base = BUF_INIT, path = BUF_INIT, body = BUF_INIT;
    struct curl_slist *h = NULL;
    char *role = NULL;
    long status;
    int rc = imds_base(&base);
    if (!rc)
        rc = imds_session(rq, base.data, &h, why, why_len);
    if (!rc && (rc = imds_line(rq, base.data, "/latest/meta-data/iam/security-credentials/", h,
                               &role, why, why_len, "instance metadata (role name)")) == ENODATA)
        snprintf(why, why_len, "instance metadata: no IAM role is attached to the instance");
    if (!rc)
        rc = buf_printf(&path, "%s/latest/meta-data/iam/security-credentials/%s", base.data, role);
    if (!rc)
        rc = fetch(rq->http, "GET", path.data, h, NULL, &body, &status, why, why_len,
                   "instance metadata (role credentials)");
    if (!rc && (rc = s3_creds_parse_json(body.data, body.len, out)))
        snprintf(why, why_len, "instance metadata: role %s returned no credentials", role);
    curl_slist_free_all(h);
    free(role);
    buf_free(&base);
    buf_free(&path);
    buf_free(&body);
    return rc ? EACCES : 0;
}

/* The IMDS must not hold up a machine that is not on EC2: a short connect
 * timeout on its own engine. */
static int quick_engine(struct http_engine **eng)
{
    struct http_engine_options o = {
        .max_connections = 2, .connect_timeout_ms = 1000, .stall_timeout_s = 2};
    return http_engine_new(&o, eng);
}

static int imds_quick(const struct s3_creds_request *rq, struct s3_credentials *out, char *why,
                      size_t why_len)
{
    struct http_engine *eng;
    int rc = quick_engine(&eng);
    if (rc)
        return rc;
    struct s3_creds_request q = *rq;
    q.http = eng;
    rc = imds(&q, out, why, why_len);
    http_engine_free(eng);
    return rc;
}

static bool env_bool(const char *name);

char *s3_creds_imds_region(void)
{
    if (env_bool("AWS_EC2_METADATA_DISABLED"))
        return NULL;
    struct s3_creds_request q = {0};
    if (quick_engine(&q.http))
        return NULL;
    struct buf base = BUF_INIT;
    struct curl_slist *h = NULL;
    char why[256] = "", *region = NULL;
    int rc = imds_base(&base);
    if (!rc)
        rc = imds_session(&q, base.data, &h, why, sizeof(why));
    if (!rc)
        rc = imds_line(&q, base.data, "/latest/meta-data/placement/region", h, &region, why,
                       sizeof(why), "instance metadata (placement region)");
    if (rc)
        log_debug("no region from the instance metadata: %s", why);
    curl_slist_free_all(h);
    buf_free(&base);
    http_engine_free(q.http);
    return rc ? NULL : region;
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

#define SOURCE_PROFILE_DEPTH 5 /* source_profile hops: more is a loop */

static int profile_credentials(const struct s3_creds_request *rq, const char *name, int depth,
                               struct s3_credentials *out, const char **kind, char *why,
                               size_t why_len);

/* The credentials a role of profile `name` is assumed with: those of its
 * source_profile, or its own keys when it names itself (as the AWS CLI
 * allows). */
static int role_source(const struct s3_creds_request *rq, const char *name, int depth,
                       struct s3_profile *p, struct s3_credentials *src, char *why, size_t why_len)
{
    if (strcmp(p->source_profile, name) == 0) {
        if (!p->creds.access_key || !p->creds.secret_key) {
            snprintf(why, why_len, "profile %s is its own source_profile but has no keys", name);
            return EACCES;
        }
        *src = p->creds;
        memset(&p->creds, 0, sizeof(p->creds));
        return 0;
    }
    if (depth + 1 >= SOURCE_PROFILE_DEPTH) {
        snprintf(why, why_len, "profile %s: source_profile goes %d profiles deep (a loop?)", name,
                 SOURCE_PROFILE_DEPTH);
        return EACCES;
    }
    const char *kind;
    int rc = profile_credentials(rq, p->source_profile, depth + 1, src, &kind, why, why_len);
    if (rc == ENOENT)
        snprintf(why, why_len, "profile %s: its source_profile %s has no credentials", name,
                 p->source_profile);
    return rc ? EACCES : 0;
}

/* The credentials profile `name` gives, first configured first: a role
 * assumed with a source_profile's credentials, a role for a web identity,
 * keys, a credential_process.  *kind names it ("profile",
 * "profile-assume-role", ...).  0; ENOENT when the profile is missing or
 * has none of these; EACCES with `why` when one is configured but fails
 * (or cannot be used: mfa_serial, credential_source, role_arn alone). */
static int profile_credentials(const struct s3_creds_request *rq, const char *name, int depth,
                               struct s3_credentials *out, const char **kind, char *why,
                               size_t why_len)
{
    struct s3_profile p;
    memset(out, 0, sizeof(*out));
    int rc = load_profile(name, &p);
    if (rc == 0 && p.role_arn && p.mfa_serial) {
        *kind = "profile-assume-role";
        snprintf(why, why_len,
                 "profile %s needs an MFA code (mfa_serial), which a mount cannot "
                 "ask for",
                 name);
        rc = EACCES;
    } else if (rc == 0 && p.role_arn && p.source_profile) {
        *kind = "profile-assume-role";
        struct s3_credentials src = {0};
        rc = role_source(rq, name, depth, &p, &src, why, why_len);
        if (!rc)
            rc = assume_role(rq, name, &p, &src, out, why, why_len);
        s3_credentials_clear(&src);
    } else if (rc == 0 && p.role_arn && p.web_identity_token_file) {
        *kind = "profile-web-identity";
        rc = web_identity(rq, p.role_arn, p.web_identity_token_file, p.role_session_name, out, why,
                          why_len);
    } else if (rc == 0 && p.role_arn) {
        *kind = "profile-assume-role";
        snprintf(why, why_len, "profile %s has role_arn but no source_profile%s", name,
                 p.credential_source ? " (credential_source is not supported)" : "");
        rc = EACCES;
    } else if (rc == 0 && p.creds.access_key && p.creds.secret_key) {
        *kind = "profile";
        *out = p.creds;
        memset(&p.creds, 0, sizeof(p.creds));
    } else if (rc == 0 && p.credential_process) {
        *kind = "profile-process";
        rc = from_process(rq, name, p.credential_process, out, why, why_len);
    } else {
        rc = ENOENT;
    }
    s3_profile_clear(&p);
    return rc;
}

/* Profile `profile` of the shared files, when it gives credentials
 * (*found): 0 or the errno of the configured source that failed. */
static int from_profile(const struct s3_creds_request *rq, const char *profile,
                        struct s3_credentials *out, char *source, size_t source_len, char *why,
                        size_t why_len, bool *found)
{
    const char *kind = "profile";
    int rc = profile_credentials(rq, profile, 0, out, &kind, why, why_len);
    *found = rc != ENOENT;
    /* the name is read back from `source` to refresh: it must fit whole */
    if (*found && (size_t)snprintf(source, source_len, "%s:%s", kind, profile) >= source_len) {
        s3_credentials_clear(out);
        snprintf(why, why_len, "profile name %.40s... is longer than %zu bytes", profile,
                 source_len - strlen(kind) - 2);
        return EACCES;
    }
    return *found ? rc : 0;
}

static int creds_fetch(const struct s3_creds_request *rq, const char *source,
                       struct s3_credentials *out, char *why, size_t why_len)
{
    if (strcmp(source, "container") == 0)
        return container(rq, out, why, why_len);
    if (strcmp(source, "imds") == 0)
        return imds_quick(rq, out, why, why_len);
    if (strcmp(source, "web-identity") == 0) {
        const char *arn = env("AWS_ROLE_ARN"), *file = env("AWS_WEB_IDENTITY_TOKEN_FILE");
        return arn && file
                   ? web_identity(rq, arn, file, env("AWS_ROLE_SESSION_NAME"), out, why, why_len)
                   : EACCES;
    }
    const char *colon = strchr(source, ':');
    if (strncmp(source, "profile-", 8) == 0 && colon) {
        const char *kind;
        int rc = profile_credentials(rq, colon + 1, 0, out, &kind, why, why_len);
        if (rc == ENOENT)
            snprintf(why, why_len, "profile %s no longer gives credentials", colon + 1);
        return rc ? EACCES : 0;
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

static int creds_find(const struct s3_creds_request *rq, struct s3_credentials *out, char *source,
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

/* Keys and token go into request headers: whatever their source (a file,
 * the environment, a process, IMDS, a container endpoint, STS), a control
 * character in them would split a header, so such credentials are
 * refused, never sent. */
static int creds_usable(int rc, struct s3_credentials *out, const char *source, char *why,
                        size_t why_len)
{
    if (rc)
        return rc;
    const char *v[] = {out->access_key, out->secret_key, out->session_token};
    for (size_t i = 0; i < 3; i++)
        if (v[i] && util_has_control(v[i])) {
            snprintf(why, why_len, "the credentials from %s hold a control character", source);
            s3_credentials_clear(out);
            return EACCES;
        }
    return 0;
}

int s3_creds_resolve(const struct s3_creds_request *rq, struct s3_credentials *out, char *source,
                     size_t source_len, char *why, size_t why_len)
{
    int rc = creds_find(rq, out, source, source_len, why, why_len);
    return creds_usable(rc, out, source, why, why_len);
}

int s3_creds_refresh(const struct s3_creds_request *rq, const char *source,
                     struct s3_credentials *out, char *why, size_t why_len)
{
    return creds_usable(creds_fetch(rq, source, out, why, why_len), out, source, why, why_len);
}

/* meta.c — object metadata as s3fs-fuse writes it, so a bucket written by
 * either tool looks the same in the other.
 *
 * s3fs keeps POSIX attributes in user metadata: x-amz-meta-mode is st_mode
 * in decimal with its type bits (a symlink is S_IFLNK and its body is the
 * target), -uid and -gid are decimal ids, -mtime/-atime/-ctime are seconds
 * since the epoch (s3fs ≥ 1.91 may add a fraction).  Extended attributes
 * live in x-amz-meta-xattr as a percent-encoded JSON object whose values are
 * base64.  An object with none of this looks like what the mount's options
 * say (file_mode, dir_mode, uid, gid) with Last-Modified as its times. */
#include "fs/fs_private.h"

#include <errno.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/xattr.h>

bool fs_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > FS_MAX_NAME)
        return false;
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
        return false;
    return memchr(name, '/', len) == NULL && memchr(name, '\0', len) == NULL;
}

int fs_parse_time(const char *s, struct timespec *out)
{
    char *end;
    errno = 0;
    long long sec = strtoll(s, &end, 10);
    if (errno || end == s)
        return EINVAL;
    long nsec = 0;
    if (*end == '.') {
        const char *p = end + 1;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (digits < 9) {
                nsec = nsec * 10 + (*p - '0');
                digits++;
            }
            p++;
        }
        if (p == end + 1)
            return EINVAL;
        for (; digits < 9; digits++)
            nsec *= 10;
        end = (char *)p;
    }
    if (*end != '\0')
        return EINVAL;
    out->tv_sec = (time_t)sec;
    out->tv_nsec = nsec;
    return 0;
}

const char *fs_content_type(const struct fs *fs, const char *path)
{
    if (!fs->cfg.mime_types)
        return NULL;
    const char *t = util_mime_lookup(fs->mime, path);
    return t ? t : "application/octet-stream";
}

const char *fs_meta_get(const struct s3_object_info *info, const char *name)
{
    for (size_t i = 0; i < info->n_meta; i++)
        if (strcmp(info->meta[i].name, name) == 0)
            return info->meta[i].value;
    return NULL;
}

static bool meta_ulong(const struct s3_object_info *info, const char *name, unsigned long *out)
{
    const char *v = fs_meta_get(info, name);
    if (!v || !*v)
        return false;
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (errno || *end)
        return false;
    *out = n;
    return true;
}

void fs_attr_apply_config(const struct fs_config *cfg, struct fs_attr *a)
{
    if (cfg->force_uid)
        a->uid = cfg->uid;
    if (cfg->force_gid)
        a->gid = cfg->gid;
    if (!S_ISLNK(a->mode))
        a->mode &= ~(cfg->umask & 07777);
}

void fs_attr_from_listing(const struct fs_config *cfg, bool is_dir, uint64_t size, int64_t mtime,
                          const char *etag, struct fs_attr *a)
{
    memset(a, 0, sizeof(*a));
    a->mode = is_dir ? (S_IFDIR | (cfg->dir_mode & 07777)) : (S_IFREG | (cfg->file_mode & 07777));
    a->uid = cfg->uid;
    a->gid = cfg->gid;
    a->size = is_dir ? 0 : size;
    a->mtime.tv_sec = (time_t)mtime;
    a->atime = a->ctime = a->mtime;
    if (etag)
        snprintf(a->etag, sizeof(a->etag), "%s", etag);
    fs_attr_apply_config(cfg, a);
}

bool fs_meta_old_dir(const struct s3_object_info *info)
{
    if (info->size != 0)
        return false; /* bytes a directory would hide */
    const char *ct = info->content_type ? info->content_type : "";
    if (strncasecmp(ct, FS_DIR_CONTENT_TYPE, strlen(FS_DIR_CONTENT_TYPE)) == 0 ||
        strncasecmp(ct, "httpd/unix-directory", 20) == 0)
        return true;
    unsigned long n;
    return meta_ulong(info, "mode", &n) && ((mode_t)n & S_IFMT) == S_IFDIR;
}

bool fs_attr_verified(const struct fs_attr *a)
{
    return a->headed || a->has_meta;
}

void fs_attr_from_head(const struct fs_config *cfg, const struct s3_object_info *info, bool is_dir,
                       struct fs_attr *a)
{
    fs_attr_from_listing(cfg, is_dir, info->size, info->mtime, info->etag, a);
    a->marker = is_dir;
    a->headed = true;
    unsigned long n;
    if (meta_ulong(info, "mode", &n)) {
        mode_t type = (mode_t)n & S_IFMT;
        a->has_meta = true;
        if (is_dir)
            a->mode = S_IFDIR | ((mode_t)n & 07777);
        else if (type == S_IFLNK)
            a->mode = S_IFLNK | 0777;
        else
            a->mode = S_IFREG | ((mode_t)n & 07777);
    }
    if (meta_ulong(info, "uid", &n)) {
        a->uid = (uid_t)n;
        a->has_meta = true;
    }
    if (meta_ulong(info, "gid", &n)) {
        a->gid = (gid_t)n;
        a->has_meta = true;
    }
    const char *t;
    if ((t = fs_meta_get(info, "mtime")) && fs_parse_time(t, &a->mtime) == 0)
        a->ctime = a->atime = a->mtime;
    if ((t = fs_meta_get(info, "atime")))
        fs_parse_time(t, &a->atime);
    if ((t = fs_meta_get(info, "ctime")))
        fs_parse_time(t, &a->ctime);
    fs_attr_apply_config(cfg, a);
}

void fs_attr_to_stat(const struct fs_attr *a, fuse_ino_t ino, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = ino;
    st->st_mode = a->mode;
    st->st_nlink = S_ISDIR(a->mode) ? 2 : 1;
    st->st_uid = a->uid;
    st->st_gid = a->gid;
    st->st_size = (off_t)a->size;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)((a->size + 511) / 512);
    st->st_mtim = a->mtime;
    st->st_atim = a->atime;
    st->st_ctim = a->ctime;
}

void fs_meta_put_time(struct buf *store, const struct timespec *t)
{
    if (t->tv_nsec)
        buf_printf(store, "%lld.%09ld", (long long)t->tv_sec, t->tv_nsec);
    else
        buf_printf(store, "%lld", (long long)t->tv_sec);
}

size_t fs_meta_build(const struct fs_attr *a, const char *xattr, struct s3_meta *meta,
                     struct buf *store)
{
    /* Values are stored one after another in `store`; offsets are turned
     * into pointers at the end because appending may move the bytes. */
    static const char *const names[] = {"mode", "uid", "gid", "mtime", "atime", "ctime", "xattr"};
    size_t offs[7];
    size_t n = 0;
    buf_clear(store);
    for (size_t i = 0; i < 7; i++) {
        if (i == 6 && !xattr)
            break;
        offs[n++] = store->len;
        switch (i) {
        case 0: buf_printf(store, "%u", (unsigned)a->mode); break;
        case 1: buf_printf(store, "%u", (unsigned)a->uid); break;
        case 2: buf_printf(store, "%u", (unsigned)a->gid); break;
        case 3: fs_meta_put_time(store, &a->mtime); break;
        case 4: fs_meta_put_time(store, &a->atime); break;
        case 5: fs_meta_put_time(store, &a->ctime); break;
        case 6: buf_puts(store, xattr); break;
        }
        buf_append(store, "", 1); /* keep the NUL between values */
    }
    if (!store->data)
        return 0;
    for (size_t i = 0; i < n; i++) {
        meta[i].name = (char *)names[i];
        meta[i].value = store->data + offs[i];
    }
    return n;
}

/* ---- xattrs ------------------------------------------------------------ */

/* Parse the encoded value into a JSON object (an empty one for NULL/""). */
static int xattr_parse(const char *encoded, json_object **out)
{
    if (!encoded || !*encoded) {
        *out = json_object_new_object();
        return *out ? 0 : ENOMEM;
    }
    char *raw;
    int rc = util_pct_decode(encoded, &raw);
    if (rc)
        return rc == ENOMEM ? ENOMEM : EINVAL; /* a malformed escape, or a NUL */
    json_object *o = json_tokener_parse(raw);
    free(raw);
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return EINVAL;
    }
    *out = o;
    return 0;
}

int fs_xattr_get(const char *encoded, const char *name, char **val, size_t *len)
{
    json_object *o, *v;
    int rc = xattr_parse(encoded, &o);
    if (rc)
        return rc;
    if (!json_object_object_get_ex(o, name, &v) || !json_object_is_type(v, json_type_string)) {
        json_object_put(o);
        return ENODATA;
    }
    const char *b64 = json_object_get_string(v);
    size_t blen = strlen(b64);
    unsigned char *bytes = malloc(blen / 4 * 3 + 4);
    int n = bytes ? EVP_DecodeBlock(bytes, (const unsigned char *)b64, (int)blen) : -1;
    /* EVP_DecodeBlock counts padding bytes as data: take them off. */
    if (n >= 0 && blen >= 1 && b64[blen - 1] == '=')
        n--;
    if (n >= 0 && blen >= 2 && b64[blen - 2] == '=')
        n--;
    json_object_put(o); /* b64 lives inside o */
    if (n < 0) {
        rc = bytes ? EINVAL : ENOMEM;
        free(bytes);
        return rc;
    }
    *val = (char *)bytes;
    *len = (size_t)n;
    return 0;
}

int fs_xattr_set(const char *encoded, const char *name, const char *val, size_t len, int flags,
                 char **out)
{
    json_object *o;
    int rc = xattr_parse(encoded, &o);
    if (rc)
        return rc;
    bool exists = json_object_object_get_ex(o, name, NULL);
    if (!val) {
        if (!exists) {
            json_object_put(o);
            return ENODATA;
        }
        json_object_object_del(o, name);
    } else {
        if ((flags & XATTR_CREATE) && exists)
            rc = EEXIST;
        else if ((flags & XATTR_REPLACE) && !exists)
            rc = ENODATA;
        if (rc) {
            json_object_put(o);
            return rc;
        }
        char *b64 = malloc(4 * ((len + 2) / 3) + 1);
        if (!b64) {
            json_object_put(o);
            return ENOMEM;
        }
        EVP_EncodeBlock((unsigned char *)b64, (const unsigned char *)val, (int)len);
        json_object_object_add(o, name, json_object_new_string(b64));
        free(b64);
    }
    *out = NULL;
    if (json_object_object_length(o) > 0) {
        const char *json = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        struct buf b = BUF_INIT;
        rc = util_pct_encode(&b, json, strlen(json), false);
        *out = rc ? NULL : buf_steal(&b);
        if (!rc && !*out)
            rc = ENOMEM;
        buf_free(&b);
    }
    json_object_put(o);
    return rc;
}

int fs_xattr_list(const char *encoded, char **out, size_t *len)
{
    json_object *o;
    int rc = xattr_parse(encoded, &o);
    if (rc)
        return rc;
    struct buf b = BUF_INIT;
    json_object_object_foreach(o, key, v)
    {
        (void)v;
        buf_append(&b, key, strlen(key) + 1);
    }
    json_object_put(o);
    *len = b.len;
    *out = buf_steal(&b);
    return *out ? 0 : ENOMEM;
}

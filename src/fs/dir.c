/* dir.c — directory listings and emptiness.
 *
 * A directory is a key prefix.  Its listing is ListObjectsV2 with delimiter
 * "/" under "path/": common prefixes are subdirectories, keys are files,
 * and the "path/" marker itself is skipped.  A name that is both a key and
 * a prefix is shown once, as the directory.  A listing is read a page at
 * a time (fs_dir_pager): what a page needs of the names before it (the
 * key K beside a prefix K/, a file K beside K.gz) is looked for in it
 * and the page before, which is where they are but for more than a page
 * of keys between them.  Keys that cannot be POSIX
 * names ("a//b", ".", "..", over 255 bytes, a NUL byte once %-decoded) are
 * skipped with one warning each.  A listing of N keys costs ⌈N/1000⌉
 * requests and no HEAD: entries carry what the listing says (size,
 * LastModified, ETag).
 * Renaming a whole directory is dir_rename.c. */
#include "fs/fs_private.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct name_seen {
    const char *name; /* points into the listing's entries */
    size_t idx;
    UT_hash_handle hh;
};

/* Warn once per key and mount about names that cannot be shown. */
void fs_dir_warn_skipped(struct fs *fs, const char *key, const char *why)
{
    if (fs_once(fs, 'k', key, UINT64_MAX))
        log_warn("listing: skipping key \"%s\": %s", key, why);
}

static int dir_add(struct fs_dir *d, size_t *cap, const char *name, size_t len,
                   const struct fs_attr *a)
{
    if (util_grow((void **)&d->ents, cap, d->n + 1, sizeof(*d->ents)))
        return ENOMEM;
    if (!(d->ents[d->n].name = util_strndup(name, len)))
        return ENOMEM;
    d->ents[d->n].attr = *a;
    d->ents[d->n].hidden = false;
    d->n++;
    return 0;
}

/* A page being built: its entries, and the index of each name among
 * them (and among the page before it, `prev`), so that a name met again
 * (a prefix that is also a key, a view beside a real file) is found
 * without a scan. */
struct listing {
    struct fs *fs;
    const char *path; /* the directory */
    size_t plen;      /* the length of its key prefix */
    struct fs_dir *d;
    size_t cap; /* of d->ents */
    struct name_seen *seen;
    struct fs_dir *prev; /* the page before, or NULL */
    struct name_seen *prev_seen;
};

/* Remember d's entry `idx` under its name in *seen (a name not remembered
 * for want of memory is only not found again). */
static void seen_add(struct name_seen **seen, const struct fs_dir *d, size_t idx)
{
    struct name_seen *s = calloc(1, sizeof(*s));
    if (s) {
        s->name = d->ents[idx].name;
        s->idx = idx;
        HASH_ADD_KEYPTR(hh, *seen, s->name, strlen(s->name), s);
    }
}

/* The entry called name[0..len) in this page or the one before: its
 * attributes to change, or NULL. */
static struct fs_dirent *list_find(const struct listing *l, const char *name, size_t len)
{
    struct name_seen *s;
    HASH_FIND(hh, l->seen, name, len, s);
    if (s)
        return &l->d->ents[s->idx];
    HASH_FIND(hh, l->prev_seen, name, len, s);
    return s ? &l->prev->ents[s->idx] : NULL;
}

/* Add an entry and remember its name. */
static int list_add(struct listing *l, const char *name, size_t len, const struct fs_attr *a)
{
    int rc = dir_add(l->d, &l->cap, name, len, a);
    if (!rc)
        seen_add(&l->seen, l->d, l->d->n - 1);
    return rc;
}

static int add_local_children(struct listing *l)
{
    struct fs *fs = l->fs;
    int rc = 0;
    size_t plen = strlen(l->path);
    pthread_mutex_lock(&fs->lock);
    for (struct fs_inode *in = fs->by_path; in && !rc && fs->n_local; in = in->hh_path.next) {
        if (!in->local)
            continue;
        const char *p = in->path;
        if (plen && (strncmp(p, l->path, plen) != 0 || p[plen] != '/'))
            continue;
        const char *name = plen ? p + plen + 1 : p;
        if (strchr(name, '/'))
            continue;
        if (!list_find(l, name, strlen(name)))
            rc = dir_add(l->d, &l->cap, name, strlen(name), &in->attr);
    }
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

static bool is_hidden(struct fs *fs, const char *dir, const char *name, size_t len)
{
    if (!fs->hidden)
        return false;
    char *nm = util_strndup(name, len);
    char *p = nm ? fs_child_path(dir, nm) : NULL;
    struct fs_hidden *h = NULL;
    if (p)
        HASH_FIND_STR(fs->hidden, p, h);
    free(nm);
    free(p);
    return h != NULL;
}

/* gunzip=view: every file K.gz gets a view K beside it, unless a real K
 * exists; gunzip=replace: K.gz is shown only as K.  A view's size is exact
 * when its index is known on this machine, else the compressed size (see
 * docs/SEMANTICS.md); no request is made per entry.  K comes before K.gz
 * in key order: it is looked for in this page and the one before. */
static int add_views(struct listing *l)
{
    struct fs *fs = l->fs;
    size_t n = l->d->n;
    bool replace = fs->cfg.gunzip == FS_GUNZIP_REPLACE;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        struct fs_dirent *de = &l->d->ents[i];
        size_t len = strlen(de->name);
        if (len <= 3 || strcmp(de->name + len - 3, ".gz") != 0 || !S_ISREG(de->attr.mode))
            continue;
        if (list_find(l, de->name, len - 3))
            continue; /* the real K wins */
        struct fs_attr a = de->attr;
        a.gz = a.gz_suffix = true;
        a.untyped = false;
        a.comp_size = a.size;
        a.mode &= (mode_t)~0222;
        char *raw = fs_child_path(l->path, de->name);
        if (!raw)
            return ENOMEM;
        fs_gz_size_known(fs, raw, &a);
        free(raw);
        de->hidden = replace;                    /* dropped once the page is complete */
        rc = list_add(l, de->name, len - 3, &a); /* de may move: not used after */
    }
    return rc;
}

/* The files of one page (fs->lock held): each key under the prefix whose
 * rest is a valid name. */
static int list_keys(struct listing *l, const struct s3_list_page *page, bool first)
{
    struct fs *fs = l->fs;
    int rc = 0;
    for (size_t i = 0; i < page->n_entries && !rc; i++) {
        const struct s3_list_entry *le = &page->entries[i];
        const char *name = le->key + l->plen;
        size_t len = strlen(name);
        if (i == 0 && first)
            l->d->first_mtime = le->mtime;
        if (len == 0) {
            l->d->marker = true; /* the directory's own marker: not a name */
            continue;
        }
        if (!fs_name_valid(name, len)) {
            fs_dir_warn_skipped(fs, le->key, "not a valid file name");
            continue;
        }
        if (is_hidden(fs, l->path, name, len))
            continue;
        struct fs_attr a;
        fs_attr_from_listing(&fs->cfg, false, le->size, le->mtime, le->etag, &a);
        a.untyped = le->size == 0; /* a file, or an old-style directory object */
        rc = list_add(l, name, len, &a);
    }
    return rc;
}

/* The subdirectories of one page (fs->lock held).  A name that is a key
 * too is shown once, as the directory (when the key was on the page
 * before, a reader may have been given it as a file already). */
static int list_prefixes(struct listing *l, const struct s3_list_page *page)
{
    struct fs *fs = l->fs;
    int rc = 0;
    for (size_t i = 0; i < page->n_prefixes && !rc; i++) {
        const char *name = page->prefixes[i] + l->plen;
        size_t len = strlen(name);
        if (len)
            len--; /* the trailing '/' */
        if (!fs_name_valid(name, len)) {
            fs_dir_warn_skipped(fs, page->prefixes[i], "not a valid directory name");
            continue;
        }
        if (fs->cfg.gz_index_shared && l->plen == 0 && len == 7 && memcmp(name, ".pailfs", 7) == 0)
            continue; /* shared gzip indexes: not part of the data */
        struct fs_attr a;
        fs_attr_from_listing(&fs->cfg, true, 0, fs->mount_time.tv_sec, NULL, &a);
        struct fs_dirent *de = list_find(l, name, len);
        if (de) {
            /* an empty key beside it: an old-style directory object */
            if (!fs->warned_conflict && !de->attr.untyped)
                log_warn("key \"%.*s\" and prefix \"%s\" both exist: showing the directory "
                         "(logged once per mount)",
                         (int)(l->plen + len), page->prefixes[i], page->prefixes[i]);
            fs->warned_conflict = true;
            a.old_dir = de->attr.untyped;
            de->attr = a;
            continue;
        }
        rc = list_add(l, name, len, &a);
    }
    return rc;
}

/* Forget the names (they point into the entries: before drop_hidden). */
static void seen_free(struct name_seen **seen)
{
    struct name_seen *s, *tmp;
    HASH_ITER(hh, *seen, s, tmp)
    {
        HASH_DEL(*seen, s);
        free(s);
    }
}

/* The entries marked hidden (K.gz under gunzip=replace) leave. */
static void drop_hidden(struct fs_dir *d)
{
    size_t kept = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (d->ents[i].hidden)
            free(d->ents[i].name);
        else
            d->ents[kept++] = d->ents[i];
    }
    d->n = kept;
}

int fs_dir_pager_init(struct fs *fs, const char *path, struct fs_dir_pager *pg)
{
    memset(pg, 0, sizeof(*pg));
    pg->fs = fs;
    pg->path = strdup(path);
    pg->prefix = fs_key(fs, path, true);
    if (!pg->path || !pg->prefix) {
        fs_dir_pager_free(pg);
        return ENOMEM;
    }
    return 0;
}

void fs_dir_pager_free(struct fs_dir_pager *pg)
{
    free(pg->path);
    free(pg->prefix);
    free(pg->token);
    memset(pg, 0, sizeof(*pg));
}

int fs_dir_pager_seek(struct fs_dir_pager *pg, const char *token)
{
    char *t = token ? strdup(token) : NULL;
    if (token && !t)
        return ENOMEM;
    free(pg->token);
    pg->token = t;
    pg->ended = false;
    return 0;
}

/* One page of ListObjectsV2 under the prefix with delimiter "/" into l
 * (first: the listing's first page); *page is the server's. */
static int page_fill(struct fs_dir_pager *pg, struct listing *l, bool first)
{
    struct fs *fs = pg->fs;
    struct s3_list_page page = {0};
    struct s3_list_params p = {.prefix = pg->prefix,
                               .delimiter = "/",
                               .continuation_token = pg->token,
                               .max_keys = fs->cfg.list_page < 1000 ? fs->cfg.list_page : 0};
    int rc = s3_list_objects_v2(fs->s3, &p, &page, NULL);
    if (rc)
        return rc;
    pthread_mutex_lock(&fs->lock);
    for (size_t i = 0; i < page.n_skipped; i++)
        fs_dir_warn_skipped(fs, page.skipped[i], FS_NUL_NAME);
    rc = list_keys(l, &page, first);
    if (!rc)
        rc = list_prefixes(l, &page);
    pthread_mutex_unlock(&fs->lock);
    /* a key we cannot show still makes the directory */
    l->d->exists = page.n_entries || page.n_prefixes || page.n_skipped;
    char *next = NULL;
    if (!rc && page.truncated && page.next_token && !(next = strdup(page.next_token)))
        rc = ENOMEM;
    if (!rc) { /* the next page; after an error this one is asked again */
        free(pg->token);
        pg->token = next;
    }
    s3_list_page_free(&page);
    return rc;
}

int fs_dir_pager_next(struct fs_dir_pager *pg, struct fs_dir *prev, struct fs_dir *d)
{
    struct fs *fs = pg->fs;
    memset(d, 0, sizeof(*d));
    d->first_mtime = fs->mount_time.tv_sec;
    if (pg->ended) {
        d->whole = true;
        return 0;
    }
    struct listing l = {.fs = fs,
                        .path = pg->path,
                        .plen = strlen(pg->prefix),
                        .d = d,
                        .prev = prev && prev->n ? prev : NULL};
    for (size_t i = 0; l.prev && i < l.prev->n; i++)
        seen_add(&l.prev_seen, l.prev, i);
    bool first = !pg->token;
    int rc = page_fill(pg, &l, first);
    if (!rc && (fs->cfg.gunzip == FS_GUNZIP_VIEW || fs->cfg.gunzip == FS_GUNZIP_REPLACE))
        rc = add_views(&l);
    pg->ended = !rc && !pg->token;
    if (pg->ended) /* the files made here and not stored yet come last */
        rc = add_local_children(&l);
    seen_free(&l.seen);
    seen_free(&l.prev_seen);
    drop_hidden(d);
    d->whole = pg->ended && first;
    if (rc)
        fs_dir_free(d);
    return rc;
}

/* Append page `pg` to `d` (taking its entries). */
static int dir_append(struct fs_dir *d, struct fs_dir *pg)
{
    if (!d->n) {
        struct fs_dir keep = *d;
        free(keep.ents);
        *d = *pg;
        d->exists |= keep.exists;
        d->marker |= keep.marker;
        d->first_mtime = keep.exists ? keep.first_mtime : pg->first_mtime;
        memset(pg, 0, sizeof(*pg));
        return 0;
    }
    size_t cap = d->n;
    if (util_grow((void **)&d->ents, &cap, d->n + pg->n, sizeof(*d->ents)))
        return ENOMEM;
    memcpy(d->ents + d->n, pg->ents, pg->n * sizeof(*d->ents));
    d->n += pg->n;
    d->exists |= pg->exists;
    d->marker |= pg->marker;
    free(pg->ents);
    memset(pg, 0, sizeof(*pg));
    return 0;
}

int fs_dir_list(struct fs *fs, const char *path, unsigned max_pages, struct fs_dir *d)
{
    memset(d, 0, sizeof(*d));
    d->first_mtime = fs->mount_time.tv_sec;
    struct fs_dir_pager pg;
    int rc = fs_dir_pager_init(fs, path, &pg);
    size_t last = 0; /* where the last page begins in d */
    for (unsigned pages = 0; !rc && !pg.ended && (!max_pages || pages < max_pages); pages++) {
        struct fs_dir prev = {.ents = d->ents + last, .n = d->n - last};
        struct fs_dir page;
        rc = fs_dir_pager_next(&pg, &prev, &page);
        size_t at = d->n;
        if (!rc && (rc = dir_append(d, &page)))
            fs_dir_free(&page);
        last = at;
    }
    if (!rc) {
        d->whole = pg.ended;
        if (!pg.ended && pg.token && !(d->next_token = strdup(pg.token)))
            rc = ENOMEM;
    }
    fs_dir_pager_free(&pg);
    if (rc)
        fs_dir_free(d);
    return rc;
}

int fs_dir_copy(const struct fs_dir *d, struct fs_dir *out)
{
    *out = *d;
    out->ents = NULL;
    out->n = 0;
    out->next_token = NULL;
    if (d->next_token && !(out->next_token = strdup(d->next_token)))
        return ENOMEM;
    size_t cap = 0;
    int rc = 0;
    for (size_t i = 0; i < d->n && !rc; i++)
        rc = dir_add(out, &cap, d->ents[i].name, strlen(d->ents[i].name), &d->ents[i].attr);
    if (rc)
        fs_dir_free(out);
    return rc;
}

static void *fetch_main(void *arg)
{
    struct fs_dir_fetch *f = arg;
    f->rc = fs_dir_pager_next(f->pg, f->prev.n ? &f->prev : NULL, &f->d);
    return NULL;
}

/* Start f (its pg and prev set): 0, or ENOMEM/EAGAIN (not started). */
static int fetch_start(struct fs_dir_fetch *f)
{
    f->gen = fs_known_gen(f->pg->fs);
    f->asked_ms = util_now_ms();
    if (f->pg->token && !(f->token = strdup(f->pg->token)))
        return ENOMEM;
    int rc = util_thread_start(&f->thread, fetch_main, f);
    f->running = rc == 0;
    return rc;
}

int fs_dir_fetch_start(struct fs_dir_pager *pg, const struct fs_dir *prev,
                       struct fs_dir_fetch **out)
{
    struct fs_dir_fetch *f = calloc(1, sizeof(*f));
    if (!f)
        return ENOMEM;
    f->pg = pg;
    if (prev) /* a view: its entries stay where they are */
        f->prev = (struct fs_dir){.ents = prev->ents, .n = prev->n};
    int rc = fetch_start(f);
    if (rc) {
        fs_dir_fetch_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

int fs_dir_fetch_next(struct fs *fs, const char *path, const struct fs_dir *first,
                      struct fs_dir_fetch **out)
{
    if (first->whole || !first->next_token)
        return EINVAL;
    struct fs_dir_fetch *f = calloc(1, sizeof(*f));
    if (!f)
        return ENOMEM;
    f->pg = &f->own;
    f->prev = (struct fs_dir){.ents = first->ents, .n = first->n};
    int rc = fs_dir_pager_init(fs, path, &f->own);
    if (!rc)
        rc = fs_dir_pager_seek(&f->own, first->next_token);
    if (!rc)
        rc = fetch_start(f);
    if (rc) {
        fs_dir_fetch_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

int fs_dir_fetch_wait(struct fs_dir_fetch *f, struct fs_dir *d)
{
    if (f->running)
        pthread_join(f->thread, NULL);
    f->running = false;
    *d = f->d;
    memset(&f->d, 0, sizeof(f->d));
    int rc = f->rc;
    f->rc = ENOENT; /* taken */
    return rc;
}

void fs_dir_fetch_free(struct fs_dir_fetch *f)
{
    if (!f)
        return;
    if (f->running)
        pthread_join(f->thread, NULL);
    fs_dir_free(&f->d);
    fs_dir_pager_free(&f->own);
    free(f->token);
    free(f);
}

void fs_dir_free(struct fs_dir *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->ents[i].name);
    free(d->ents);
    free(d->next_token);
    memset(d, 0, sizeof(*d));
}

int fs_dir_is_empty(struct fs *fs, const char *path, bool *empty)
{
    char *prefix = fs_key(fs, path, true);
    if (!prefix)
        return ENOMEM;
    struct s3_list_params p = {.prefix = prefix, .max_keys = 2};
    struct s3_list_page page = {0};
    int rc = s3_list_objects_v2(fs->s3, &p, &page, NULL);
    if (rc == 0) {
        size_t others = page.n_prefixes + page.n_skipped; /* not shown, but there */
        for (size_t i = 0; i < page.n_entries; i++)
            others += strcmp(page.entries[i].key, prefix) != 0;
        *empty = others == 0;
    }
    s3_list_page_free(&page);
    free(prefix);
    if (rc || !*empty)
        return rc;
    /* Files created here and not yet uploaded count too. */
    size_t plen = strlen(path);
    pthread_mutex_lock(&fs->lock);
    for (struct fs_inode *in = fs->by_path; in && fs->n_local; in = in->hh_path.next)
        if (in->local && strncmp(in->path, path, plen) == 0 && in->path[plen] == '/')
            *empty = false;
    pthread_mutex_unlock(&fs->lock);
    return 0;
}

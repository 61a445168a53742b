/* s3drive.c — a test-only command line over src/s3, so that integration
 * tests can drive every S3 operation of the client against a real server.
 * Not installed.  Output is line-oriented and meant for the tests to parse;
 * a failure prints "s3drive: OP: errno=NAME: details" and exits 1. */
#include "s3/s3.h"
#include "util/util.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *errno_name(int e)
{
    switch (e) {
    case 0: return "0";
    case ENOENT: return "ENOENT";
    case EACCES: return "EACCES";
    case EINVAL: return "EINVAL";
    case ESTALE: return "ESTALE";
    case ENOSYS: return "ENOSYS";
    case ENOTSUP: return "ENOTSUP";
    case EPROTO: return "EPROTO";
    case EIO: return "EIO";
    case ENOMEM: return "ENOMEM";
    case EFBIG: return "EFBIG";
    default: return strerror(e);
    }
}

static int fail(const char *op, int rc, const struct s3_error *err)
{
    char msg[512];
    fprintf(stderr, "s3drive: %s: errno=%s: %s\n", op, errno_name(rc),
            s3_error_describe(rc, err, msg, sizeof(msg)));
    return 1;
}

static int load(const char *path, char **data, size_t *len)
{
    int rc = util_read_file(path, (size_t)8 << 30, data, len);
    if (rc)
        fprintf(stderr, "s3drive: cannot read %s: %s\n", path, strerror(rc));
    return rc;
}

/* --meta k=v options collected into s3_meta pairs (pointing into argv). */
struct metas {
    struct s3_meta m[32];
    size_t n;
    const char *content_type;
};

static int parse_put_opts(int argc, char **argv, int from, struct metas *ms)
{
    for (int i = from; i < argc; i++) {
        if (strcmp(argv[i], "--meta") == 0 && i + 1 < argc && ms->n < 32) {
            char *kv = argv[++i], *eq = strchr(kv, '=');
            if (!eq)
                return EINVAL;
            *eq = '\0';
            ms->m[ms->n].name = kv;
            ms->m[ms->n].value = eq + 1;
            ms->n++;
        } else if (strcmp(argv[i], "--content-type") == 0 && i + 1 < argc) {
            ms->content_type = argv[++i];
        } else {
            fprintf(stderr, "s3drive: unexpected argument %s\n", argv[i]);
            return EINVAL;
        }
    }
    return 0;
}

struct file_sink {
    FILE *f;
};

static int to_file(void *arg, const void *data, size_t len)
{
    struct file_sink *s = arg;
    return fwrite(data, 1, len, s->f) == len ? 0 : EIO;
}

static void print_info(const struct s3_object_info *in)
{
    printf("size=%llu\netag=%s\nmtime=%lld\n", (unsigned long long)in->size, in->etag,
           (long long)in->mtime);
    if (in->content_type)
        printf("content-type=%s\n", in->content_type);
    if (in->content_encoding)
        printf("content-encoding=%s\n", in->content_encoding);
    for (size_t i = 0; i < in->n_meta; i++)
        printf("meta-%s=%s\n", in->meta[i].name, in->meta[i].value);
}

static int cmd_list(struct s3_client *c, int argc, char **argv)
{
    struct s3_list_params p = {0};
    for (int i = 0; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--prefix") == 0)
            p.prefix = argv[i + 1];
        else if (strcmp(argv[i], "--delimiter") == 0)
            p.delimiter = argv[i + 1];
        else if (strcmp(argv[i], "--start-after") == 0)
            p.start_after = argv[i + 1];
        else if (strcmp(argv[i], "--max-keys") == 0)
            p.max_keys = (unsigned)atoi(argv[i + 1]);
        else
            return EINVAL;
    }
    char *token = NULL;
    unsigned pages = 0;
    int rc = 0;
    for (;;) {
        struct s3_list_page page;
        struct s3_error err;
        p.continuation_token = token;
        rc = s3_list_objects_v2(c, &p, &page, &err);
        if (rc) {
            free(token);
            return fail("list", rc, &err);
        }
        pages++;
        for (size_t i = 0; i < page.n_entries; i++)
            printf("K %s\t%llu\t%s\n", page.entries[i].key,
                   (unsigned long long)page.entries[i].size, page.entries[i].etag);
        for (size_t i = 0; i < page.n_prefixes; i++)
            printf("P %s\n", page.prefixes[i]);
        free(token);
        token = page.truncated ? page.next_token : NULL;
        page.next_token = NULL;
        bool more = page.truncated;
        s3_list_page_free(&page);
        if (!more)
            break;
    }
    printf("pages=%u\n", pages);
    return 0;
}

static int cmd_delete_many(struct s3_client *c)
{
    char *keys[1000];
    size_t n = 0, deleted = 0, errors = 0;
    char line[4096];
    bool eof = false;
    while (!eof) {
        if (fgets(line, sizeof(line), stdin)) {
            line[strcspn(line, "\n")] = '\0';
            if (!*line)
                continue;
            keys[n++] = strdup(line);
        } else {
            eof = true;
        }
        if (n == 1000 || (eof && n)) {
            int errs[1000];
            struct s3_error err;
            int rc = s3_delete_objects(c, (const char *const *)keys, n, errs, &err);
            if (rc)
                return fail("delete-many", rc, &err);
            for (size_t i = 0; i < n; i++) {
                if (errs[i])
                    errors++;
                else
                    deleted++;
                free(keys[i]);
            }
            n = 0;
        }
    }
    printf("deleted=%zu errors=%zu\n", deleted, errors);
    return errors ? 1 : 0;
}

static int cmd_mpu(struct s3_client *c, const char *key, const char *file, size_t part_size)
{
    char *data;
    size_t len;
    if (load(file, &data, &len))
        return 1;
    struct s3_error err;
    char *upload_id;
    int rc = s3_create_multipart_upload(c, key, NULL, &upload_id, &err);
    if (rc) {
        free(data);
        return fail("create-multipart-upload", rc, &err);
    }
    size_t nparts = len ? (len + part_size - 1) / part_size : 1;
    struct s3_part *parts = calloc(nparts, sizeof(*parts));
    for (size_t i = 0; i < nparts && !rc; i++) {
        size_t off = i * part_size, n = len - off < part_size ? len - off : part_size;
        parts[i].number = (int)i + 1;
        rc = s3_upload_part(c, key, upload_id, (int)i + 1, data + off, n, &parts[i], &err);
    }
    char etag[80] = "";
    if (!rc)
        rc = s3_complete_multipart_upload(c, key, upload_id, parts, nparts, etag, &err);
    if (rc) {
        fail("multipart", rc, &err);
        s3_abort_multipart_upload(c, key, upload_id, NULL);
    } else {
        printf("parts=%zu\netag=%s\n", nparts, etag);
    }
    free(parts);
    free(upload_id);
    free(data);
    return rc ? 1 : 0;
}

static int cmd_mpu_copy(struct s3_client *c, const char *src, const char *dst, uint64_t part_size)
{
    struct s3_object_info info;
    struct s3_error err;
    int rc = s3_head_object(c, src, &info, &err);
    if (rc)
        return fail("head", rc, &err);
    char *upload_id;
    rc = s3_create_multipart_upload(c, dst, NULL, &upload_id, &err);
    if (rc) {
        s3_object_info_clear(&info);
        return fail("create-multipart-upload", rc, &err);
    }
    size_t nparts = (size_t)((info.size + part_size - 1) / part_size);
    struct s3_part *parts = calloc(nparts ? nparts : 1, sizeof(*parts));
    for (size_t i = 0; i < nparts && !rc; i++) {
        uint64_t off = i * part_size;
        uint64_t n = info.size - off < part_size ? info.size - off : part_size;
        parts[i].number = (int)i + 1;
        rc = s3_upload_part_copy(c, dst, upload_id, (int)i + 1, src, off, n, info.etag, &parts[i],
                                 &err);
    }
    char etag[80] = "";
    if (!rc)
        rc = s3_complete_multipart_upload(c, dst, upload_id, parts, nparts, etag, &err);
    if (rc)
        fail("multipart-copy", rc, &err);
    else
        printf("parts=%zu\netag=%s\n", nparts, etag);
    free(parts);
    free(upload_id);
    s3_object_info_clear(&info);
    return rc ? 1 : 0;
}

static int run(struct s3_client *c, int argc, char **argv)
{
    const char *cmd = argv[0];
    struct s3_error err;
    int rc;
    if (strcmp(cmd, "whoami") == 0) {
        const char *src, *ak;
        s3_client_credentials_info(c, &src, &ak);
        printf("source=%s\naccess_key=%s\nregion=%s\n", src, ak, s3_client_region(c));
        return 0;
    }
    if (strcmp(cmd, "head-bucket") == 0) {
        if ((rc = s3_head_bucket_limited(c, NULL, &err)))
            return fail("head-bucket", rc, &err);
        printf("region=%s\n", s3_client_region(c));
        return 0;
    }
    if (strcmp(cmd, "put") == 0 && argc >= 3) {
        struct metas ms = {.n = 0};
        char *data;
        size_t len;
        char etag[80];
        if (parse_put_opts(argc, argv, 3, &ms) || load(argv[2], &data, &len))
            return 1;
        struct s3_put_opts o = {.content_type = ms.content_type, .meta = ms.m, .n_meta = ms.n};
        rc = s3_put_object(c, argv[1], data, len, &o, etag, &err);
        free(data);
        if (rc)
            return fail("put", rc, &err);
        printf("etag=%s\n", etag);
        return 0;
    }
    if (strcmp(cmd, "get") == 0 && argc >= 3) {
        uint64_t off = argc > 3 ? strtoull(argv[3], NULL, 10) : 0;
        uint64_t len = argc > 4 ? strtoull(argv[4], NULL, 10) : S3_TO_END;
        const char *if_match = argc > 5 ? argv[5] : NULL;
        struct file_sink s = {strcmp(argv[2], "-") == 0 ? stdout : fopen(argv[2], "wb")};
        if (!s.f)
            return 1;
        struct s3_object_info info;
        rc = s3_get_object(c, argv[1], off, len, if_match, to_file, &s, &info, &err);
        if (s.f != stdout)
            fclose(s.f);
        if (rc)
            return fail("get", rc, &err);
        fprintf(stderr, "size=%llu etag=%s\n", (unsigned long long)info.size, info.etag);
        s3_object_info_clear(&info);
        return 0;
    }
    if ((strcmp(cmd, "get-buf") == 0 || strcmp(cmd, "get-mem") == 0) && argc >= 4) {
        /* get-buf KEY OUT MAX [OFF [LEN [IF_MATCH]]]: s3_get_to_buf in two
         * halves, the second GET appending to the first's bytes (as a
         * shared gzip index is read); get-mem: s3_get_to_mem into MAX bytes.
         * OUT is written only on success. */
        size_t max = strtoull(argv[3], NULL, 10);
        uint64_t off = argc > 4 ? strtoull(argv[4], NULL, 10) : 0;
        uint64_t len = argc > 5 ? strtoull(argv[5], NULL, 10) : S3_TO_END;
        const char *if_match = argc > 6 ? argv[6] : NULL;
        struct buf b = BUF_INIT;
        struct s3_object_info info;
        if (argv[0][4] == 'b') {
            uint64_t half = len == S3_TO_END ? 1000 : len / 2;
            rc = s3_get_to_buf(c, argv[1], off, half, if_match, &b, max, &info, &err);
            s3_object_info_clear(&info);
            uint64_t rest = len == S3_TO_END ? S3_TO_END : len - half;
            if (!rc && b.len == half)
                rc = s3_get_to_buf(c, argv[1], off + half, rest, if_match, &b, max, &info, &err);
            else if (!rc)
                memset(&info, 0, sizeof(info));
        } else {
            size_t got = 0;
            rc = max ? buf_reserve(&b, max) : 0;
            if (!rc)
                rc = s3_get_to_mem(c, argv[1], off, len, if_match, b.data, max, &got, &info, &err);
            b.len = got;
        }
        printf("len=%zu\n", b.len);
        if (rc) {
            buf_free(&b);
            return fail(cmd, rc, &err);
        }
        FILE *f = fopen(argv[2], "wb");
        if (!f || fwrite(b.data ? b.data : "", 1, b.len, f) != b.len || fclose(f))
            rc = EIO;
        fprintf(stderr, "size=%llu etag=%s\n", (unsigned long long)info.size, info.etag);
        s3_object_info_clear(&info);
        buf_free(&b);
        return rc ? 1 : 0;
    }
    if (strcmp(cmd, "head") == 0 && argc == 2) {
        struct s3_object_info info;
        if ((rc = s3_head_object(c, argv[1], &info, &err)))
            return fail("head", rc, &err);
        print_info(&info);
        s3_object_info_clear(&info);
        return 0;
    }
    if (strcmp(cmd, "list") == 0)
        return cmd_list(c, argc - 1, argv + 1) == EINVAL ? 1 : 0;
    if (strcmp(cmd, "delete") == 0 && argc == 2) {
        if ((rc = s3_delete_object(c, argv[1], &err)))
            return fail("delete", rc, &err);
        return 0;
    }
    if (strcmp(cmd, "delete-many") == 0)
        return cmd_delete_many(c);
    if (strcmp(cmd, "copy") == 0 && argc >= 3) {
        struct metas ms = {.n = 0};
        char etag[80];
        if (parse_put_opts(argc, argv, 3, &ms))
            return 1;
        struct s3_put_opts o = {.content_type = ms.content_type, .meta = ms.m, .n_meta = ms.n};
        bool replace = ms.n || ms.content_type;
        if ((rc = s3_copy_object(c, argv[1], argv[2], replace ? &o : NULL, NULL, etag, &err)))
            return fail("copy", rc, &err);
        printf("etag=%s\n", etag);
        return 0;
    }
    if (strcmp(cmd, "mpu") == 0 && argc == 4)
        return cmd_mpu(c, argv[1], argv[2], strtoull(argv[3], NULL, 10));
    if (strcmp(cmd, "mpu-copy") == 0 && argc == 4)
        return cmd_mpu_copy(c, argv[1], argv[2], strtoull(argv[3], NULL, 10));
    if (strcmp(cmd, "mpu-create") == 0 && argc == 2) {
        char *id;
        if ((rc = s3_create_multipart_upload(c, argv[1], NULL, &id, &err)))
            return fail("create-multipart-upload", rc, &err);
        printf("upload_id=%s\n", id);
        free(id);
        return 0;
    }
    if (strcmp(cmd, "mpu-abort") == 0 && argc == 3) {
        if ((rc = s3_abort_multipart_upload(c, argv[1], argv[2], &err)))
            return fail("abort-multipart-upload", rc, &err);
        return 0;
    }
    if (strcmp(cmd, "list-uploads") == 0) {
        struct s3_upload_page page;
        if ((rc = s3_list_multipart_uploads(c, argc > 1 ? argv[1] : NULL, NULL, NULL, &page, &err)))
            return fail("list-uploads", rc, &err);
        for (size_t i = 0; i < page.n_uploads; i++)
            printf("U %s\t%s\n", page.uploads[i].key, page.uploads[i].upload_id);
        s3_upload_page_free(&page);
        return 0;
    }
    fprintf(stderr, "s3drive: unknown command or arguments: %s\n", cmd);
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"endpoint", required_argument, NULL, 'e'},
        {"bucket", required_argument, NULL, 'b'},
        {"region", required_argument, NULL, 'r'},
        {"path-style", no_argument, NULL, 'p'},
        {"virtual", no_argument, NULL, 'v'},
        {"profile", required_argument, NULL, 'P'},
        {"passwd-file", required_argument, NULL, 'w'},
        {"public", no_argument, NULL, 'u'},
        {"retries", required_argument, NULL, 'R'},
        {"retry-base-ms", required_argument, NULL, 'B'},
        {"process-timeout-ms", required_argument, NULL, 'T'},
        {"connect-timeout-ms", required_argument, NULL, 'c'},
        {"stall-timeout", required_argument, NULL, 's'},
        {"log-level", required_argument, NULL, 'l'},
        {"checksum", required_argument, NULL, 'k'},
        {"sse-c-key-file", required_argument, NULL, 'K'},
        {NULL, 0, NULL, 0},
    };
    struct s3_config cfg = {0};
    int o;
    while ((o = getopt_long(argc, argv, "+", longopts, NULL)) != -1) {
        switch (o) {
        case 'e': cfg.endpoint = optarg; break;
        case 'b': cfg.bucket = optarg; break;
        case 'r': cfg.region = optarg; break;
        case 'p': cfg.addressing = S3_ADDR_PATH; break;
        case 'v': cfg.addressing = S3_ADDR_VIRTUAL; break;
        case 'P': cfg.profile = optarg; break;
        case 'w': cfg.passwd_file = optarg; break;
        case 'u': cfg.public_bucket = true; break;
        case 'R': cfg.max_attempts = (unsigned)atoi(optarg) + 1; break;
        case 'B': cfg.retry_base_ms = (unsigned)atoi(optarg); break;
        case 'T': cfg.credential_process_timeout_ms = (unsigned)atoi(optarg); break;
        case 'c': cfg.http.connect_timeout_ms = atol(optarg); break;
        case 's': cfg.http.stall_timeout_s = atol(optarg); break;
        case 'k':
            cfg.checksum = strcmp(optarg, "off") == 0         ? S3_CHECKSUM_OFF
                           : strcmp(optarg, "sha256") == 0    ? S3_CHECKSUM_SHA256
                           : strcmp(optarg, "crc64nvme") == 0 ? S3_CHECKSUM_CRC64NVME
                                                              : S3_CHECKSUM_CRC32C;
            break;
        case 'K': cfg.sse_c_key_file = optarg; break;
        case 'l': {
            enum log_level lvl;
            if (log_level_parse(optarg, &lvl))
                return 2;
            log_set_level(lvl);
            break;
        }
        default: return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "usage: s3drive [--endpoint URL] --bucket B [options] COMMAND ...\n");
        return 2;
    }
    struct s3_client *c;
    struct s3_error err;
    int rc = s3_client_new(&cfg, &c, &err);
    if (rc)
        return fail("client", rc, &err);
    rc = run(c, argc - optind, argv + optind);
    s3_client_free(c);
    return rc;
}

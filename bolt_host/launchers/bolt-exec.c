/*
 * bolt-exec: confine this process as one app and exec the app, in one exec.
 *
 *   bolt-exec [--join=FILE]... [--nofile=S:H] [--nproc=S:H] [--as=S:H] --uid=N --gid=N -- ARGV...
 *
 * Run by bolt-host as root (uid mode, see bolt_host/services/sandbox.py) in place of the chain
 * `sh` (joins the cgroups) -> `prlimit` -> `setpriv` -> the app, in the same order:
 *   1. writes "0" (this process) to each --join FILE (a cgroup's cgroup.procs or v1 tasks), in order;
 *   2. sets each rlimit given (soft:hard);
 *   3. setgroups(0), setresgid(N), setresuid(N), PR_SET_NO_NEW_PRIVS;
 *   4. checks the drop held: no supplementary group, all ids N, no capability left, no way back
 *      to uid 0 or gid 0, no_new_privs set;
 *   5. execs ARGV.  The pid stays the same throughout.
 * The command is looked up (in the PATH of the environment it is given) and opened as root before
 * the drop, as setpriv does (it execs with its capabilities still up): an interpreter under a
 * folder the app's uid cannot pass (a pyenv under /root, reached through a virtualenv's link) is
 * run from that descriptor (execveat) when its path is closed to the app.  Its file's own
 * execute permission is checked for the app's uid either way.
 * Any failure before the exec: one line on stderr (the app's log) and exit 125, as the chain's
 * shell does; a failed exec: 127 (not found) or 126 (any other reason), as setpriv and sh do.
 *
 * Built static (no NSS, no locale, no loader: about a millisecond of CPU less per spawn than the
 * chain, which loaded util-linux's NSS and locale twice).  The grammar is fixed: options in any
 * order, each exactly as above, ids and limits decimal, uid and gid 1 or more; "--" ends them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define EXIT_CONFINE 125
#define EXIT_CANNOT_EXEC 126
#define EXIT_NOT_FOUND 127
#define MAX_JOINS 16

static void fail(int code, const char *format, ...) __attribute__((noreturn, format(printf, 2, 3)));

static void fail(int code, const char *format, ...) {
    char line[1024];
    int used = snprintf(line, sizeof line, "bolt-exec: ");
    va_list args;
    va_start(args, format);
    vsnprintf(line + used, sizeof line - used - 1, format, args);
    va_end(args);
    size_t length = strlen(line);
    line[length] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, length + 1);
    (void)ignored;
    _exit(code);
}

/* A decimal number with nothing else around it (strtoull alone takes spaces, signs and 0x). */
static int parse_number(const char *text, unsigned long long *value) {
    if (*text < '0' || *text > '9')
        return 0;
    char *end;
    errno = 0;
    *value = strtoull(text, &end, 10);
    return errno == 0 && *end == '\0';
}

static unsigned int parse_id(const char *option, const char *text) {
    unsigned long long value;
    if (!parse_number(text, &value) || value < 1 || value >= UINT32_MAX)
        fail(EXIT_CONFINE, "%s: not an id from 1 to %u: '%s'", option, UINT32_MAX - 1, text);
    return (unsigned int)value;
}

struct limit {
    const char *option;
    int resource;
    int given;
    struct rlimit value;
};

static void parse_limit(struct limit *limit, const char *text) {
    char soft[32];
    const char *colon = strchr(text, ':');
    unsigned long long low, high;
    size_t length = colon ? (size_t)(colon - text) : 0;
    if (length == 0 || length >= sizeof soft)
        fail(EXIT_CONFINE, "%s: not SOFT:HARD: '%s'", limit->option, text);
    memcpy(soft, text, length);
    soft[length] = '\0';
    if (!parse_number(soft, &low) || !parse_number(colon + 1, &high) || low > high)
        fail(EXIT_CONFINE, "%s: not SOFT:HARD (decimal, soft <= hard): '%s'", limit->option, text);
    limit->value.rlim_cur = low;
    limit->value.rlim_max = high;
}

/* The value of "--name=value" when argument is that option, else NULL. */
static const char *option_value(const char *argument, const char *name) {
    size_t length = strlen(name);
    return strncmp(argument, name, length) == 0 && argument[length] == '=' ? argument + length + 1 : NULL;
}

static void join(const char *file) {
    if (file[0] != '/')
        fail(EXIT_CONFINE, "--join: not an absolute path: '%s'", file);
    int fd = open(file, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        fail(EXIT_CONFINE, "cannot join the cgroup of %s: %s", file, strerror(errno));
    if (write(fd, "0", 1) != 1)
        fail(EXIT_CONFINE, "cannot join the cgroup of %s: %s", file, strerror(errno));
    if (close(fd) != 0)
        fail(EXIT_CONFINE, "cannot join the cgroup of %s: %s", file, strerror(errno));
}

static void drop_privileges(uid_t uid, gid_t gid) {
    if (setgroups(0, NULL) != 0)
        fail(EXIT_CONFINE, "cannot clear the supplementary groups: %s", strerror(errno));
    if (setresgid(gid, gid, gid) != 0)
        fail(EXIT_CONFINE, "cannot set gid %u: %s", gid, strerror(errno));
    if (setresuid(uid, uid, uid) != 0)
        fail(EXIT_CONFINE, "cannot set uid %u: %s", uid, strerror(errno));
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        fail(EXIT_CONFINE, "cannot set no_new_privs: %s", strerror(errno));
}

static void check_dropped(uid_t uid, gid_t gid) {
    uid_t ruid, euid, suid;
    gid_t rgid, egid, sgid;
    if (getresuid(&ruid, &euid, &suid) != 0 || ruid != uid || euid != uid || suid != uid)
        fail(EXIT_CONFINE, "uid is not %u after the drop", uid);
    if (getresgid(&rgid, &egid, &sgid) != 0 || rgid != gid || egid != gid || sgid != gid)
        fail(EXIT_CONFINE, "gid is not %u after the drop", gid);
    if (getgroups(0, NULL) != 0)
        fail(EXIT_CONFINE, "supplementary groups left after the drop");
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct caps[_LINUX_CAPABILITY_U32S_3];
    if (syscall(SYS_capget, &header, caps) != 0)
        fail(EXIT_CONFINE, "cannot read the capabilities after the drop: %s", strerror(errno));
    for (int index = 0; index < _LINUX_CAPABILITY_U32S_3; index++)
        if (caps[index].effective || caps[index].permitted)
            fail(EXIT_CONFINE, "capabilities left after the drop");
    if (setresuid(0, 0, 0) == 0 || setresgid(0, 0, 0) == 0)
        fail(EXIT_CONFINE, "could return to root after the drop");
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
        fail(EXIT_CONFINE, "no_new_privs is not set");
}

/* execvp's lookup: a name with a slash as it is, else the first regular file with an execute
 * bit in PATH ("/bin:/usr/bin" when unset; an empty entry is the working folder). */
static const char *find_program(const char *name) {
    if (strchr(name, '/') != NULL)
        return name;
    const char *path = getenv("PATH");
    const char *folders = path ? path : "/bin:/usr/bin";
    for (const char *start = folders;; start++) {
        const char *end = strchrnul(start, ':');
        size_t length = (size_t)(end - start);
        char *candidate = malloc(length + strlen(name) + 2);
        if (candidate == NULL)
            fail(EXIT_CONFINE, "out of memory");
        if (length == 0)
            strcpy(candidate, name);
        else
            sprintf(candidate, "%.*s/%s", (int)length, start, name);
        struct stat info;
        if (stat(candidate, &info) == 0 && S_ISREG(info.st_mode) && (info.st_mode & 0111))
            return candidate;
        free(candidate);
        if (*end == '\0')
            break;
        start = end;
    }
    fail(EXIT_NOT_FOUND, "cannot run %s: not found in PATH=%s", name, folders);
}

static void run_with_shell(const char *program, char **command) {
    size_t count = 0;
    while (command[count] != NULL)
        count++;
    char **shell = calloc(count + 2, sizeof *shell);
    if (shell == NULL)
        fail(EXIT_CONFINE, "out of memory");
    shell[0] = "/bin/sh";
    shell[1] = (char *)program;
    memcpy(shell + 2, command + 1, (count - 1) * sizeof *shell);
    execv(shell[0], shell);
    errno = ENOEXEC; /* the script's own failure is the one to report */
}

int main(int argc, char **argv) {
    struct limit limits[] = {
        {"--nofile", RLIMIT_NOFILE, 0, {0, 0}},
        {"--nproc", RLIMIT_NPROC, 0, {0, 0}},
        {"--as", RLIMIT_AS, 0, {0, 0}},
    };
    const size_t limit_count = sizeof limits / sizeof limits[0];
    const char *joins[MAX_JOINS];
    size_t join_count = 0;
    long long uid = -1, gid = -1;
    int index = 1;
    for (; index < argc && strcmp(argv[index], "--") != 0; index++) {
        const char *argument = argv[index], *value;
        int known = 0;
        if ((value = option_value(argument, "--join")) != NULL) {
            if (join_count == MAX_JOINS)
                fail(EXIT_CONFINE, "more than %d --join files", MAX_JOINS);
            joins[join_count++] = value;
            continue;
        }
        if ((value = option_value(argument, "--uid")) != NULL) {
            if (uid >= 0)
                fail(EXIT_CONFINE, "--uid given twice");
            uid = parse_id("--uid", value);
            continue;
        }
        if ((value = option_value(argument, "--gid")) != NULL) {
            if (gid >= 0)
                fail(EXIT_CONFINE, "--gid given twice");
            gid = parse_id("--gid", value);
            continue;
        }
        for (size_t which = 0; which < limit_count && !known; which++) {
            if ((value = option_value(argument, limits[which].option)) != NULL) {
                if (limits[which].given)
                    fail(EXIT_CONFINE, "%s given twice", limits[which].option);
                parse_limit(&limits[which], value);
                limits[which].given = known = 1;
            }
        }
        if (!known)
            fail(EXIT_CONFINE, "unknown option '%s' (usage: bolt-exec [--join=FILE]... [--nofile=S:H] "
                               "[--nproc=S:H] [--as=S:H] --uid=N --gid=N -- ARGV...)", argument);
    }
    if (uid < 0 || gid < 0)
        fail(EXIT_CONFINE, "--uid and --gid are required");
    if (index >= argc)
        fail(EXIT_CONFINE, "no \"--\" before the command");
    char **command = argv + index + 1;
    if (command[0] == NULL || command[0][0] == '\0')
        fail(EXIT_CONFINE, "no command after \"--\"");

    const char *program = find_program(command[0]);
    int program_fd = open(program, O_PATH | O_CLOEXEC);
    if (program_fd < 0)
        fail(errno == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXEC, "cannot run %s: %s", program, strerror(errno));
    for (size_t which = 0; which < join_count; which++)
        join(joins[which]);
    for (size_t which = 0; which < limit_count; which++)
        if (limits[which].given && setrlimit(limits[which].resource, &limits[which].value) != 0)
            fail(EXIT_CONFINE, "cannot set %s=%llu:%llu: %s", limits[which].option + 2,
                 (unsigned long long)limits[which].value.rlim_cur,
                 (unsigned long long)limits[which].value.rlim_max, strerror(errno));
    drop_privileges((uid_t)uid, (gid_t)gid);
    check_dropped((uid_t)uid, (gid_t)gid);

    execv(program, command);
    if (errno == EACCES) /* a folder on its way closed to the app: the file itself is checked again */
        syscall(SYS_execveat, program_fd, "", command, environ, AT_EMPTY_PATH);
    if (errno == ENOEXEC) /* a script without "#!": the shell runs it, as execvp does */
        run_with_shell(program, command);
    fail(errno == ENOENT ? EXIT_NOT_FOUND : EXIT_CANNOT_EXEC, "cannot run %s: %s", program, strerror(errno));
}

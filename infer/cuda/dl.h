// dl.h: loading an NVIDIA library at run time, for the cgo preambles of
// cublas.go (cuBLAS) and gptq.go (cuSOLVER): no link-time dependency on any
// soname, so one binary runs with whichever major version the machine has.
#pragma once
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <link.h>
#include <string.h>

// qdl_open loads name (RTLD_LOCAL) after pre, if not NULL (a dependency from
// the same directory, loaded RTLD_GLOBAL so that name's NEEDED entry resolves
// outside the loader's search path; a failure there is ignored). On failure
// it returns NULL with dlerror()'s text in err (errlen bytes).
static void* qdl_open(const char* name, const char* pre, char* err, size_t errlen) {
	if (pre) dlopen(pre, RTLD_NOW | RTLD_GLOBAL);
	void* h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		const char* e = dlerror();
		strncpy(err, e ? e : "dlopen failed", errlen - 1);
	}
	return h;
}

// qdl_missing closes h after a failed symbol lookup, writes msg to err and
// returns 2.
static int qdl_missing(void* h, const char* msg, char* err, size_t errlen) {
	strncpy(err, msg, errlen - 1);
	dlclose(h);
	return 2;
}

// qdl_path writes the file h was loaded from to path (len bytes).
static void qdl_path(void* h, char* path, size_t len) {
	struct link_map* lm = NULL;
	if (dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name) strncpy(path, lm->l_name, len - 1);
}

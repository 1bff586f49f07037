/* The custom-op library entry point onnxruntime calls after
 * SessionOptions.register_custom_ops_library(path): negotiates the API version
 * once per process, then adds a com.onnxbit domain holding every op of
 * op_definitions to the session options it is handed. */
#include <pthread.h>
#include <stdlib.h>

#include "custom_ops.h"
#include "obx_common.h"
#include "op_status.h"
#include "ort_abi.h"
#include "session_settings.h"

/* Every op of the domain; a new op is its file plus one line here. */
static const ObxOpDefinition *const op_definitions[] = {
    &obx_ternary_matmul_definition,
    &obx_ternary_conv_definition,
    &obx_bf16_matmul_definition,
};
enum { OP_COUNT = sizeof op_definitions / sizeof op_definitions[0] };

/* What the process's onnxruntime serves; set once, under `registry_lock`. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static const OrtApi *negotiated_api;
static uint32_t negotiated_version;

/* Domains handed to onnxruntime, each with its own ops carrying the settings
 * of the options it was registered on; they must outlive every session built
 * from the options, so they are released when this library is unloaded. */
typedef struct DomainNode {
    OrtCustomOpDomain *domain;
    ObxCustomOp ops[OP_COUNT];
    struct DomainNode *next;
} DomainNode;
static DomainNode *registered_domains;

/* 1.x serves API version x; a newer major version serves at least ours. */
static uint32_t api_version_of(const char *version_string)
{
    if (!version_string)
        return ORT_ABI_MAX_VERSION;
    char *end = NULL;
    unsigned long major = strtoul(version_string, &end, 10);
    if (end == version_string || *end != '.')
        return ORT_ABI_MAX_VERSION;
    if (major != 1)
        return major > 1 ? ORT_ABI_MAX_VERSION : 0;
    const char *minor_text = end + 1;
    unsigned long minor = strtoul(minor_text, &end, 10);
    if (end == minor_text)
        return ORT_ABI_MAX_VERSION;
    return minor < ORT_ABI_MAX_VERSION ? (uint32_t)minor : ORT_ABI_MAX_VERSION;
}

/* Picks min(runtime's API version, ours); a runtime that claims a version but
 * serves no table for it gets the next lower one. Returns NULL with an error
 * status (when one can be made) if nothing usable is served. */
static OrtStatus *negotiate(const OrtApiBase *base)
{
    if (negotiated_api)
        return NULL;
    const char *runtime_version = base->GetVersionString ? base->GetVersionString() : NULL;
    uint32_t wanted = api_version_of(runtime_version);
    for (uint32_t version = wanted; version >= ORT_ABI_MIN_VERSION; version--) {
        const OrtApi *api = base->GetApi(version);
        if (api) {
            negotiated_api = api;
            negotiated_version = version;
            return NULL;
        }
    }
    const OrtApi *oldest = base->GetApi(1);
    if (!oldest)
        return NULL; /* no table at all: nothing can even carry the error */
    return obx_status_fmt(oldest, ORT_FAIL,
                          "onnxbit: onnxruntime %s serves no C API version between %d and %u; "
                          "onnxbit's custom ops need onnxruntime 1.%d or newer",
                          runtime_version ? runtime_version : "(unknown version)",
                          ORT_ABI_MIN_VERSION, wanted, ORT_ABI_MIN_VERSION);
}

static OrtStatus *add_domain(OrtSessionOptions *options)
{
    const OrtApi *api = negotiated_api;
    ObxSessionSettings settings;
    OrtStatus *status = obx_read_session_settings(api, negotiated_version, options, &settings);
    if (status)
        return status;
    DomainNode *node = malloc(sizeof *node);
    if (!node)
        return api->CreateStatus(ORT_FAIL, "onnxbit: out of memory registering custom ops");
    for (size_t i = 0; i < OP_COUNT; i++)
        obx_custom_op_init(&node->ops[i], op_definitions[i], api, negotiated_version, settings);
    OrtCustomOpDomain *domain = NULL;
    status = api->CreateCustomOpDomain(OBX_OP_DOMAIN, &domain);
    if (status) {
        free(node);
        return obx_status_wrap(api, status, "onnxbit: creating domain " OBX_OP_DOMAIN);
    }
    for (size_t i = 0; i < OP_COUNT && !status; i++)
        status = api->CustomOpDomain_Add(domain, &node->ops[i].ort);
    if (!status)
        status = api->AddCustomOpDomain(options, domain);
    if (status) {
        api->ReleaseCustomOpDomain(domain);
        free(node);
        return obx_status_wrap(api, status, "onnxbit: adding domain " OBX_OP_DOMAIN);
    }
    node->domain = domain;
    node->next = registered_domains;
    registered_domains = node;
    return NULL;
}

OBX_API OrtStatus *RegisterCustomOps(OrtSessionOptions *options, const OrtApiBase *api_base)
{
    if (!api_base || !api_base->GetApi)
        return NULL; /* no API table to report through */
    pthread_mutex_lock(&registry_lock);
    OrtStatus *status = negotiate(api_base);
    if (!status && negotiated_api)
        status = add_domain(options);
    pthread_mutex_unlock(&registry_lock);
    return status;
}

__attribute__((destructor)) static void release_domains(void)
{
    pthread_mutex_lock(&registry_lock);
    while (registered_domains) {
        DomainNode *node = registered_domains;
        registered_domains = node->next;
        negotiated_api->ReleaseCustomOpDomain(node->domain);
        free(node);
    }
    pthread_mutex_unlock(&registry_lock);
}

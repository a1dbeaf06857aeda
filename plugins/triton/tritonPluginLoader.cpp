// The library Triton loads: --backend-config=tensorrt,plugins=<folder>/libhandssca_plugins_triton.so
//
// Triton's TensorRT backend opens the libraries of its `plugins` setting with a plain dlopen and
// expects them to register their creators as they load. libhandssca_plugins.so registers nothing
// as it loads, on purpose: IPluginRegistry::loadLibrary "will fail and return nullptr if any of
// the plugins are already registered" (NvInferRuntimeCommon.h), and loadLibrary (getCreators) is
// how trtexec --dynamicPlugins, the Python runtime and build-engine load it. So this library, when
// opened, loads libhandssca_plugins.so from its own folder through that same loadLibrary: one way
// to register, whoever asks.
#include "NvInferRuntime.h"

#include <dlfcn.h>

#include <cstdio>
#include <string>

namespace
{

char const kPluginLibrary[] = "libhandssca_plugins.so";

// The folder this library was loaded from (Triton is given an absolute path), with a slash.
std::string ownFolder()
{
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&ownFolder), &info) == 0 || info.dli_fname == nullptr)
    {
        return {};
    }
    std::string const self(info.dli_fname);
    auto const slash = self.rfind('/');
    return slash == std::string::npos ? std::string() : self.substr(0, slash + 1);
}

struct LoadPluginsWhenOpened
{
    LoadPluginsWhenOpened()
    {
        std::string const path = ownFolder() + kPluginLibrary;
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        if (registry == nullptr || registry->loadLibrary(path.c_str()) == nullptr)
        {
            // Triton logs a plugin library that fails to open and goes on; engines using the
            // plugin then fail to deserialize, so say here which file and why.
            std::fprintf(stderr,
                "handssca: TensorRT did not load %s (missing, built for another TensorRT version, or "
                "already registered)\n",
                path.c_str());
        }
    }
};

LoadPluginsWhenOpened const gLoadPluginsWhenOpened;

} // namespace

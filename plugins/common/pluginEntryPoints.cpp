// The library's entry points for IPluginRegistry::loadLibrary, trtexec --dynamicPlugins and
// Python's registry.load_library: getCreators lists every creator of the library, and
// setLoggerFinder gives the plugins TensorRT's logger. Nothing registers itself at load time
// (no REGISTER_TENSORRT_PLUGIN), since loadLibrary fails on creators registered twice.
#include "pluginLogger.h"
#include "selectiveScanPlugin.h"

#define HANDSSCA_EXPORT extern "C" __attribute__((visibility("default")))

HANDSSCA_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    handssca::setPluginLoggerFinder(finder);
}

HANDSSCA_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static handssca::SelectiveScanPluginCreator selectiveScanCreator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&selectiveScanCreator};
    nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
}

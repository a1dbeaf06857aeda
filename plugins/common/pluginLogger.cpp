#include "pluginLogger.h"

#include <atomic>

namespace handssca
{
namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};
} // namespace

void setPluginLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

void logPluginMessage(nvinfer1::ILogger::Severity severity, char const* message) noexcept
{
    nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
    if (finder == nullptr)
    {
        return;
    }
    try
    {
        nvinfer1::ILogger* logger = finder->findLogger();
        if (logger != nullptr)
        {
            logger->log(severity, message);
        }
    }
    catch (...)
    {
        // A logger must never take the engine down.
    }
}

} // namespace handssca

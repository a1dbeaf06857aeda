// TensorRT plugin (IPluginV3) for the exporter's HandSSCASelectiveScan ONNX node.
//
// Node: inputs (u, delta, A, B, C, D, delta_bias), output y with u's shape and type; attribute
// delta_softplus (INT). u, delta, B, C, y are fp32, fp16 or bf16 (one type); A, D, delta_bias fp32.
// The ONNX parser finds this plugin by the node's op_type and its plugin_version /
// plugin_namespace attributes, which must match kPluginName, kPluginVersion and the namespace.
#pragma once

#include "NvInferRuntime.h"

#include <string>
#include <vector>

namespace handssca
{

constexpr char const* kPluginName = "HandSSCASelectiveScan";
constexpr char const* kPluginVersion = "1";
constexpr int32_t kNbInputs = 7;
enum InputIndex : int32_t
{
    kU = 0,
    kDelta = 1,
    kA = 2,
    kB = 3,
    kC = 4,
    kD = 5,
    kDeltaBias = 6,
    kOutput = 7, // position of the output in supportsFormatCombination's inOut
};

class SelectiveScanPlugin final : public nvinfer1::IPluginV3,
                                  public nvinfer1::IPluginV3OneCore,
                                  public nvinfer1::IPluginV3OneBuild,
                                  public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit SelectiveScanPlugin(bool deltaSoftplus, std::string pluginNamespace = "");
    SelectiveScanPlugin(SelectiveScanPlugin const& other);
    SelectiveScanPlugin& operator=(SelectiveScanPlugin const&) = delete;
    ~SelectiveScanPlugin() override = default;

    bool deltaSoftplus() const noexcept
    {
        return mDeltaSoftplus != 0;
    }

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    void initFields() noexcept;

    int32_t mDeltaSoftplus{1};
    std::string mNamespace;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

class SelectiveScanPluginCreator final : public nvinfer1::IPluginCreatorV3One
{
public:
    SelectiveScanPluginCreator();
    ~SelectiveScanPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;

    void setPluginNamespace(char const* pluginNamespace) noexcept;

private:
    std::string mNamespace;
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFieldCollection{};
};

} // namespace handssca

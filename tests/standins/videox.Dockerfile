# Test image of the VideoX-Fun stack: the product Dockerfile's videox-fun target (GPU_STACK=false)
# plus the nvidia-smi stand-in reporting one 24 GB GPU, and the UI stand-in selected through
# WAN22_VIDEOX_APP, so the real launcher runs and the stand-in replaces only VideoX-Fun's app.
ARG VIDEOX_IMAGE
FROM ${VIDEOX_IMAGE}
COPY nvidia-smi /usr/local/bin/nvidia-smi
COPY videox_ui_standin.py /opt/standins/videox_ui_standin.py
RUN chmod +x /usr/local/bin/nvidia-smi && echo "1x24:8.9:NVIDIA GeForce RTX 4090" > /etc/wan22-fake-gpus
ENV WAN22_VIDEOX_APP=/opt/standins/videox_ui_standin.py

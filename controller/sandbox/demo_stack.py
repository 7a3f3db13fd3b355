"""The demo environment the sandbox (and the integration tests) create in the local emulator:
a VPC, an ALB with a target group and listener, an ECS cluster and a Fargate service behind it.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.core.aws import AwsClients, AwsError, arn_resource


@dataclass(frozen=True)
class DemoStack:
    region: str
    cluster: str
    service: str
    load_balancer: str  # the `app/NAME/ID` dimension value
    target_group: str  # the `targetgroup/NAME/ID` dimension value
    dns_name: str


async def create_demo_stack(
    aws: AwsClients,
    region: str,
    name: str = "demo",
    services: int = 1,
    desired_count: int = 1,
    running: bool = False,
) -> list[DemoStack]:
    """One VPC, ALB and cluster; `services` Fargate services, each behind its own target group.
    `running`: each service's runningCount as ECS reports it once its tasks run (the emulator
    creates a service with runningCount 0 and never starts a task)."""
    vpc = (await aws.call("ec2", "CreateVpc", region, CidrBlock="10.0.0.0/16"))["Vpc"]["VpcId"]
    subnets = [
        (
            await aws.call(
                "ec2",
                "CreateSubnet",
                region,
                VpcId=vpc,
                CidrBlock=f"10.0.{i}.0/24",
                AvailabilityZone=f"{region}{zone}",
            )
        )["Subnet"]["SubnetId"]
        for i, zone in ((1, "a"), (2, "b"))
    ]
    group = (
        await aws.call(
            "ec2",
            "CreateSecurityGroup",
            region,
            GroupName=f"{name}-sg",
            Description="demo service",
            VpcId=vpc,
        )
    )["GroupId"]
    lb = (
        await aws.call("elbv2", "CreateLoadBalancer", region, Name=f"{name}-alb", Subnets=subnets)
    )["LoadBalancers"][0]
    cluster = f"{name}-cluster"
    await aws.call("ecs", "CreateCluster", region, clusterName=cluster)
    await aws.call(
        "ecs",
        "RegisterTaskDefinition",
        region,
        family=f"{name}-task",
        containerDefinitions=[
            {
                "name": "web",
                "image": "nginx",
                "memory": 512,
                "portMappings": [{"containerPort": 80}],
            }
        ],
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
    )
    stacks = []
    for index in range(services):
        service = f"{name}-service" if services == 1 else f"{name}-service-{index}"
        tg = (
            await aws.call(
                "elbv2",
                "CreateTargetGroup",
                region,
                Name=f"{name}-tg-{index}",
                Protocol="HTTP",
                Port=80,
                VpcId=vpc,
                TargetType="ip",
            )
        )["TargetGroups"][0]
        if index == 0:
            await aws.call(
                "elbv2",
                "CreateListener",
                region,
                LoadBalancerArn=lb["LoadBalancerArn"],
                Protocol="HTTP",
                Port=80,
                DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
            )
        else:
            listener = (
                await aws.call(
                    "elbv2", "DescribeListeners", region, LoadBalancerArn=lb["LoadBalancerArn"]
                )
            )["Listeners"][0]
            await aws.call(
                "elbv2",
                "CreateRule",
                region,
                ListenerArn=listener["ListenerArn"],
                Priority=index,
                Conditions=[{"Field": "path-pattern", "Values": [f"/{service}/*"]}],
                Actions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
            )
        await aws.call(
            "ecs",
            "CreateService",
            region,
            cluster=cluster,
            serviceName=service,
            taskDefinition=f"{name}-task",
            desiredCount=desired_count,
            launchType="FARGATE",
            loadBalancers=[
                {
                    "targetGroupArn": tg["TargetGroupArn"],
                    "containerName": "web",
                    "containerPort": 80,
                }
            ],
            networkConfiguration={
                "awsvpcConfiguration": {"subnets": subnets, "securityGroups": [group]}
            },
        )
        if running:  # the emulator sets runningCount to desiredCount on every update
            await aws.call(
                "ecs",
                "UpdateService",
                region,
                cluster=cluster,
                service=service,
                desiredCount=desired_count,
            )
        stacks.append(
            DemoStack(
                region=region,
                cluster=cluster,
                service=service,
                load_balancer=arn_resource(lb["LoadBalancerArn"], "loadbalancer"),
                target_group=arn_resource(tg["TargetGroupArn"], "targetgroup"),
                dns_name=lb["DNSName"],
            )
        )
    return stacks


async def create_activator_target_group(
    aws: AwsClients, region: str, name: str = "demo", port: int = 8081
) -> str:
    """The activator's IP target group, in the demo VPC (as the README's set-up creates it
    next to a real ALB); its ARN. Named apart from the demo's `-tg-` groups: a destroy of the
    demo stack leaves it, as it would leave the controller's own infrastructure."""
    groups = await aws.call("elbv2", "DescribeTargetGroups", region, Names=[f"{name}-tg-0"])
    answer = await aws.call(
        "elbv2",
        "CreateTargetGroup",
        region,
        Name=f"{name}-activator",
        Protocol="HTTP",
        Port=port,
        VpcId=groups["TargetGroups"][0]["VpcId"],
        TargetType="ip",
        HealthCheckPath="/",
        Matcher={"HttpCode": "200-499"},
    )
    return str(answer["TargetGroups"][0]["TargetGroupArn"])


async def find_demo_stack(
    aws: AwsClients, region: str, cluster: str, service: str
) -> DemoStack | None:
    """The demo stack as it is now in the emulator (None once it has been destroyed)."""
    answer = await aws.call("ecs", "DescribeServices", region, cluster=cluster, services=[service])
    services = [s for s in answer.get("services", []) if s.get("status") == "ACTIVE"]
    if not services or not services[0].get("loadBalancers"):
        return None
    tg_arn = services[0]["loadBalancers"][0]["targetGroupArn"]
    groups = await aws.call("elbv2", "DescribeTargetGroups", region, TargetGroupArns=[tg_arn])
    lb_arn = groups["TargetGroups"][0]["LoadBalancerArns"][0]
    lbs = await aws.call("elbv2", "DescribeLoadBalancers", region, LoadBalancerArns=[lb_arn])
    return DemoStack(
        region=region,
        cluster=cluster,
        service=service,
        load_balancer=arn_resource(lb_arn, "loadbalancer"),
        target_group=arn_resource(tg_arn, "targetgroup"),
        dns_name=lbs["LoadBalancers"][0]["DNSName"],
    )


async def delete_demo_stack(aws: AwsClients, region: str, name: str = "demo") -> None:
    """What `terraform destroy` of the demo stack does: services, cluster, ALB, target groups."""
    cluster = f"{name}-cluster"
    try:
        arns = (await aws.call("ecs", "ListServices", region, cluster=cluster))["serviceArns"]
    except AwsError as exc:
        if exc.code != "ClusterNotFoundException":
            raise
        arns = []
    for arn in arns:
        await aws.call("ecs", "DeleteService", region, cluster=cluster, service=arn, force=True)
    if arns or await _cluster_exists(aws, region, cluster):
        await aws.call("ecs", "DeleteCluster", region, cluster=cluster)
    lbs = (await aws.call("elbv2", "DescribeLoadBalancers", region))["LoadBalancers"]
    for lb in lbs:
        if lb["LoadBalancerName"] == f"{name}-alb":
            await aws.call(
                "elbv2", "DeleteLoadBalancer", region, LoadBalancerArn=lb["LoadBalancerArn"]
            )
    groups = (await aws.call("elbv2", "DescribeTargetGroups", region))["TargetGroups"]
    for group in groups:
        if group["TargetGroupName"].startswith(f"{name}-tg-"):
            await aws.call(
                "elbv2", "DeleteTargetGroup", region, TargetGroupArn=group["TargetGroupArn"]
            )


async def _cluster_exists(aws: AwsClients, region: str, cluster: str) -> bool:
    answer = await aws.call("ecs", "DescribeClusters", region, clusters=[cluster])
    return any(c.get("status") == "ACTIVE" for c in answer.get("clusters", []))
